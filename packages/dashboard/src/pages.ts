// Serves the dashboard page (the files scripts/build-web.mjs bundled into
// dist/web) at /dashboard/ on the reservation-service's HTTP port: static files
// only (serve-static), with a Content-Security-Policy that lets the page load
// nothing but its own files and talk to nothing but its own origin.
import type http from "node:http";
import { fileURLToPath } from "node:url";
import serveStatic from "serve-static";

/** Where the bundled page is (this file runs from dist/, the page is in dist/web/). */
export const DASHBOARD_DIR = fileURLToPath(new URL("./web/", import.meta.url));

export const DASHBOARD_PATH = "/dashboard/";

/**
 * Own files only, no inline script or style, no plugins, frames or forms
 * posting elsewhere; API calls (Connect over fetch) to the same origin only.
 */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": DASHBOARD_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-cache",
};

export type PageHandler = (req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => void;

/**
 * `GET /` and `GET /dashboard` redirect to `/dashboard/`; `GET`/`HEAD /dashboard/…`
 * serve the page's files (index.html for the directory); anything else under
 * /dashboard/ is 405, a missing file 404, a path that climbs out (`..`, also
 * percent-encoded) 403. Every other request goes to `next`.
 */
export function dashboardPages(root: string = DASHBOARD_DIR): PageHandler {
  const files = serveStatic(root, { index: ["index.html"], redirect: false, fallthrough: false, dotfiles: "ignore", etag: true, lastModified: false });
  return (req, res, next) => {
    const url = req.url ?? "/";
    const path = url.split("?")[0];
    const isRead = req.method === "GET" || req.method === "HEAD";
    if (isRead && (path === "/" || path === "/dashboard")) {
      res.writeHead(302, { location: DASHBOARD_PATH }).end();
      return;
    }
    if (!path.startsWith(DASHBOARD_PATH)) {
      next();
      return;
    }
    for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
    if (!isRead) {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    // serve-static reads the path from req.url: hand it the part below /dashboard.
    req.url = url.slice(DASHBOARD_PATH.length - 1);
    files(req, res, (err?: { status?: number; statusCode?: number }) => {
      req.url = url;
      const status = err?.status ?? err?.statusCode ?? 404;
      res.writeHead(status, { "content-type": "text/plain" }).end(`${status === 403 ? "forbidden" : status === 404 ? "not found" : "bad request"}\n`);
    });
  };
}
