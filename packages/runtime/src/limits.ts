import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import type { Logger } from "pino";

/** Calls one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS). */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 100;

/** Longest wait of a unary call for a slot of MAX_CALLS_IN_FLIGHT (admission.ts). */
export const DEFAULT_MAX_CALL_WAIT_MS = 500;

/**
 * How long a request may take to arrive whole: on the gRPC port from the call's
 * HEADERS to its half-close, on the HTTP/1.1 port from the connection (or the end
 * of the previous request) to the last byte of the body. Responses are not bounded
 * by it: a server stream lasts as long as it needs to.
 */
export const DEFAULT_REQUEST_RECEIVE_TIMEOUT_MS = 10_000;

/** What grpc-js keeps of an HTTP/2 stream, for the one thing its API cannot do: reset it. */
interface StreamHandle {
  closed: boolean;
  destroyed: boolean;
  close(code?: number): void;
}

/**
 * The HTTP/2 stream under a grpc-js server call. grpc-js keeps it private
 * (BaseServerInterceptingCall.stream, reached through ServerInterceptingCall.nextCall
 * when other interceptors come first); limits.test.ts fails if an upgrade moves it.
 */
function streamOf(call: grpc.ServerInterceptingCallInterface): StreamHandle | undefined {
  let current: unknown = call;
  for (let depth = 0; depth < 16 && typeof current === "object" && current !== null; depth++) {
    const { stream, nextCall } = current as { stream?: unknown; nextCall?: unknown };
    if (typeof stream === "object" && stream !== null && typeof (stream as StreamHandle).close === "function") return stream as StreamHandle;
    current = nextCall;
  }
  return undefined;
}

/**
 * A grpc-js server interceptor bounding how long a call's request may take to
 * arrive. Every Holdfast RPC takes one request message, so a request has arrived
 * when the client half-closes; a call that has not by `timeoutMs` after its
 * HEADERS (a client that stalls, or trickles its message) is answered
 * DEADLINE_EXCEEDED, logged once at info, and its HTTP/2 stream is reset with
 * NO_ERROR (RFC 9113 §8.1: a complete response before the request ends). The
 * reset matters: grpc-js alone leaves such a stream half-closed for as long as
 * the client likes, holding one of the connection's concurrent-stream slots.
 * The same reset ends calls grpc-js itself answered early (a message over the
 * size limit) whose client then never finishes sending. Other calls, on the same
 * connection or others, are not affected. Methods with a streamed request (none
 * in the contract today) are left alone: their request may rightly last.
 */
export function requestReceiveDeadline(timeoutMs: number, logger: Logger): grpc.ServerInterceptor {
  return (method, call) => {
    if (method.requestStream) return new grpc.ServerInterceptingCall(call);
    const stream = streamOf(call);
    let timer: NodeJS.Timeout | undefined;
    let answered = false;
    const clear = () => clearTimeout(timer);
    const expire = () => {
      if (stream !== undefined && (stream.closed || stream.destroyed)) return;
      logger.info(
        { method: method.path, peer: call.getPeer(), timeoutMs, answered },
        answered ? "gRPC request not received in time after its answer: stream reset" : "gRPC request not received in time: call cut off",
      );
      if (!answered) {
        answered = true;
        call.sendStatus({ code: grpc.status.DEADLINE_EXCEEDED, details: `the request was not received within ${timeoutMs} ms`, metadata: new grpc.Metadata() });
      }
      stream?.close(http2.constants.NGHTTP2_NO_ERROR);
    };
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        timer = setTimeout(expire, timeoutMs);
        next({
          onReceiveHalfClose(proceed) {
            clear();
            proceed();
          },
          // The call is over: a status was sent (by the handler or grpc-js) or the client
          // reset the stream. Keep the timer only while the client still owes its request.
          onCancel() {
            answered = true;
            if (stream === undefined || stream.closed || stream.destroyed) clear();
          },
        });
      },
    });
  };
}
