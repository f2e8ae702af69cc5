// A real browser for tests: Debian's chromium (never a downloaded build) driven
// by playwright-core, and the page of test/browser/page/ bundled by esbuild in
// memory and served from a loopback HTTP server on an ephemeral port.
import { existsSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium, type Browser } from "playwright-core";

/** Debian's chromium package (`apt-get install chromium`; .ci/run installs it). */
export const CHROMIUM_PATH = "/usr/bin/chromium";

export const chromiumInstalled = () => existsSync(CHROMIUM_PATH);

/** The page's entry point, in the source tree (this file runs from test/dist/support/). */
const PAGE_ENTRY = fileURLToPath(new URL("../../browser/page/main.ts", import.meta.url));

/** Bundles the page (TypeScript, connect-web, the generated stubs) into one ES module, in memory. */
export async function bundlePage(): Promise<string> {
  const result = await build({
    entryPoints: [PAGE_ENTRY],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: "inline",
    logLevel: "silent",
  });
  if (result.outputFiles.length !== 1) throw new Error(`esbuild wrote ${result.outputFiles.length} files, expected 1`);
  return result.outputFiles[0].text;
}

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Holdfast availability</title>
  <style>
    body { font-family: sans-serif; margin: 2em; }
    table { border-collapse: collapse; }
    th, td { border: 1px solid #999; padding: 0.3em 0.8em; text-align: right; }
    #status[data-state="error"] { color: #b00; }
  </style>
</head>
<body>
  <h1>Availability</h1>
  <p id="status" data-state="loading">loading</p>
  <table>
    <thead><tr><th>SKU</th><th>available</th><th>on hand</th><th>reserved</th><th>version</th></tr></thead>
    <tbody id="rows"></tbody>
  </table>
  <script type="module" src="/page.js"></script>
</body>
</html>
`;

export interface PageServer {
  /** http://127.0.0.1:port: the page's origin, for CORS_ALLOWED_ORIGINS. */
  origin: string;
  /** The page's URL with `query` as its query string. */
  url(query: Record<string, string>): string;
  close(): Promise<void>;
}

/** Serves the page (`/` and `/page.js`, from memory) on loopback, on a port the OS picks. */
export async function servePage(bundle: string): Promise<PageServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET") res.writeHead(405).end();
    else if (path === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(INDEX_HTML);
    else if (path === "/favicon.ico") res.writeHead(204).end();
    else if (path === "/page.js") res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" }).end(bundle);
    else res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    url: (query) => `${origin}/?${new URLSearchParams(query).toString()}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Headless Debian chromium; playwright-core never downloads a browser of its own. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 30_000,
  });
}
