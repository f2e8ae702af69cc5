// A server stream read in the background, for tests: every message kept, and a way to
// wait (bounded) for the first one that matches.
export class StreamRecorder<M extends { event: { case: string | undefined } }> {
  readonly messages: M[] = [];
  error: unknown;
  ended = false;
  private readonly abort = new AbortController();
  private waiters: (() => void)[] = [];

  constructor(open: (signal: AbortSignal) => AsyncIterable<M>) {
    void (async () => {
      try {
        for await (const message of open(this.abort.signal)) {
          this.messages.push(message);
          this.notify();
        }
      } catch (err) {
        this.error = err;
      } finally {
        this.ended = true;
        this.notify();
      }
    })();
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The first message (from index `from`) that satisfies `test`, within `timeoutMs`. */
  async next(what: string, test: (m: M) => boolean, timeoutMs = 5000, from = 0): Promise<M> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(from).find(test);
      if (found !== undefined) return found;
      if (this.ended) throw new Error(`stream ended (${String(this.error)}) before ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${timeoutMs} ms; got ${JSON.stringify(this.messages.map((m) => m.event.case))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  close(): void {
    this.abort.abort();
  }
}

