// The dashboard (issue 7): the page the reservation-service serves at /dashboard/
// on its HTTP port. Over HTTP: its files, their content types and security
// headers, redirects, and refused path traversal. In headless Chromium, with an
// admin token in the URL fragment: every SKU with its availability and demand
// status, live updates while holds are made through gRPC, the flash-sale report
// of a burst (figures and charts), the token's refusal, and a screenshot.
import http from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { InventoryReservationService } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { testCaller, token } from "../support/auth.js";
import { CHROMIUM_PATH, chromiumInstalled, launchChromium } from "../support/browser.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";
import { until } from "../support/wait.js";

/** How long the page may take to show a change (it normally takes well under a second). */
const SHOW_TIMEOUT_MS = 10_000;
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

let requestCounter = 0;
const rid = () => `dashboard-${process.pid}-${++requestCounter}`;

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A GET with the path sent exactly as given (no client-side normalisation of `..`). */
function rawGet(baseUrl: string, rawPath: string, method = "GET"): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, path: rawPath, method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

describe("dashboard: served at /dashboard/ on the HTTP port", function () {
  this.timeout(90_000);
  let db: TestDatabase | undefined;
  let svc: ServiceProcess | undefined;
  let grpc: GrpcJsClient<typeof InventoryReservationService> | undefined;

  before(async () => {
    db = await createTestDatabase("dashboard");
    svc = await startService("reservation-service", db.url);
    grpc = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
  });

  after(async () => {
    grpc?.close();
    await svc?.stop();
    await db?.drop();
  });

  describe("over HTTP", () => {
    it("serves the page with its content types and a strict Content-Security-Policy", async () => {
      const index = await rawGet(svc!.httpUrl, "/dashboard/");
      expect(index.status).to.equal(200);
      expect(index.headers["content-type"]).to.equal("text/html; charset=utf-8");
      expect(index.body).to.include('<script type="module" src="app.js"></script>');
      const csp = index.headers["content-security-policy"] ?? "";
      expect(csp).to.include("default-src 'none'");
      expect(csp).to.include("script-src 'self'");
      expect(csp).to.include("connect-src 'self'");
      expect(csp).to.include("frame-ancestors 'none'");
      expect(csp).to.not.include("unsafe");
      expect(index.headers["x-content-type-options"]).to.equal("nosniff");
      expect(index.headers["referrer-policy"]).to.equal("no-referrer");
      expect(index.headers["cache-control"]).to.equal("no-cache");
      expect(index.headers.etag).to.be.a("string");
      // No secret in what is served: the page is the same for everybody and asks for a token.
      expect(index.body).to.not.match(/eyJ[A-Za-z0-9_-]{10,}/);

      const script = await rawGet(svc!.httpUrl, "/dashboard/app.js");
      expect(script.status).to.equal(200);
      expect(script.headers["content-type"]).to.match(/^(text|application)\/javascript; charset=utf-8$/);
      expect(script.headers["content-security-policy"]).to.equal(csp);
      expect(script.body).to.not.match(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}/);
      const style = await rawGet(svc!.httpUrl, "/dashboard/style.css");
      expect(style.status).to.equal(200);
      expect(style.headers["content-type"]).to.equal("text/css; charset=utf-8");
      const head = await rawGet(svc!.httpUrl, "/dashboard/index.html", "HEAD");
      expect(head.status).to.equal(200);
      expect(head.body).to.equal("");
    });

    it("redirects / and /dashboard to /dashboard/; answers 404 for a missing file and 405 for other methods", async () => {
      for (const from of ["/", "/dashboard", "/dashboard?x=1"]) {
        const res = await rawGet(svc!.httpUrl, from);
        expect(res.status, from).to.equal(302);
        expect(res.headers.location, from).to.equal("/dashboard/");
      }
      const missing = await rawGet(svc!.httpUrl, "/dashboard/nope.js");
      expect(missing.status).to.equal(404);
      expect(missing.headers["content-security-policy"]).to.be.a("string");
      expect((await rawGet(svc!.httpUrl, "/dashboard/", "POST")).status).to.equal(405);
      // The rest of the port is unchanged.
      expect((await rawGet(svc!.httpUrl, "/healthz")).status).to.equal(200);
    });

    it("refuses paths that climb out of the page's directory, however encoded", async () => {
      for (const attempt of [
        "/dashboard/../package.json",
        "/dashboard/../../../../etc/passwd",
        "/dashboard/..%2f..%2fpackage.json",
        "/dashboard/%2e%2e/%2e%2e/package.json",
        "/dashboard/..%5c..%5cpackage.json",
        "/dashboard/%2e%2e%2fweb-types%2fmain.d.ts",
        "/dashboard/..",
      ]) {
        const res = await rawGet(svc!.httpUrl, attempt);
        expect(res.status, attempt).to.be.oneOf([400, 403, 404]);
        expect(res.body, attempt).to.not.include('"name"');
        expect(res.body, attempt).to.not.include("root:");
        expect(res.body, attempt).to.not.include("export");
      }
      // A NUL byte is refused too.
      expect((await rawGet(svc!.httpUrl, "/dashboard/index.html%00.js")).status).to.be.oneOf([400, 403, 404]);
    });
  });

  describe("in Chromium", () => {
    let browser: Browser | undefined;
    const contexts: BrowserContext[] = [];

    before(async function () {
      if (!chromiumInstalled()) {
        if (process.env.CI) throw new Error(`${CHROMIUM_PATH} is missing: CI must install Debian's chromium (.ci/run does)`);
        console.log(`    (skipped: ${CHROMIUM_PATH} is missing; install it with: apt-get install -y chromium)`);
        this.skip();
      }
      browser = await launchChromium();
      await grpc!.createSku({ requestId: rid(), sku: "DASH-A", name: "Flash-sale sneaker", initialOnHand: 10n });
      await grpc!.createSku({ requestId: rid(), sku: "DASH-B", name: "Limited poster", initialOnHand: 3n });
      await grpc!.createSku({ requestId: rid(), sku: "DASH-C", name: "Sold-out mug", initialOnHand: 0n });
    });

    afterEach(async () => {
      await Promise.all(contexts.splice(0).map((context) => context.close().catch(() => undefined)));
    });

    after(async () => {
      await browser?.close().catch(() => undefined);
    });

    interface OpenPage {
      page: Page;
      /** What the page logged (console, uncaught errors), for failure messages and the CSP check. */
      log: string[];
      /** The page's API calls (method and path). */
      calls: string[];
    }

    async function openDashboard(fragment = ""): Promise<OpenPage> {
      const context = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
      contexts.push(context);
      const page = await context.newPage();
      const log: string[] = [];
      const calls: string[] = [];
      page.on("console", (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
      page.on("pageerror", (err) => log.push(`[pageerror] ${err.message}`));
      page.on("request", (req) => {
        const url = new URL(req.url());
        if (url.pathname.startsWith("/holdfast.")) calls.push(`${req.method()} ${url.pathname.split("/").pop()}`);
      });
      const response = await page.goto(`${svc!.httpUrl}/dashboard/${fragment}`, { waitUntil: "load", timeout: 15_000 });
      expect(response?.status()).to.equal(200);
      expect(await response?.headerValue("content-security-policy")).to.include("default-src 'none'");
      return { page, log, calls };
    }

    async function describePage({ page, log }: OpenPage): Promise<string> {
      const status = await page.textContent("#status").catch(() => "?");
      const reportStatus = await page.textContent("#report-status").catch(() => "?");
      const rows = await page
        .$$eval("tr[data-sku]", (trs) => trs.map((tr) => JSON.stringify((tr as unknown as { dataset: Record<string, string> }).dataset)))
        .catch(() => []);
      return `status "${status}", report "${reportStatus}", rows [${rows.join(", ")}], console:\n${log.join("\n")}`;
    }

    /** Waits for `selector` (attached), failing with what the page shows. */
    async function shows(open: OpenPage, selector: string, what: string): Promise<void> {
      try {
        await open.page.waitForSelector(selector, { state: "attached", timeout: SHOW_TIMEOUT_MS });
      } catch (err) {
        throw new Error(`the page did not show ${what} (${selector}): ${await describePage(open)}\n${(err as Error).message}`);
      }
    }

    const row = (sku: string, values: Record<string, string | number>) =>
      `tr[data-sku="${sku}"]${Object.entries(values)
        .map(([key, value]) => `[data-${key}="${value}"]`)
        .join("")}`;

    const figure = (open: OpenPage, key: string) => open.page.textContent(`#report-figures tr[data-figure="${key}"] td`);

    it("shows every SKU with its availability and demand status, live as holds are made over gRPC, and the report of the burst", async () => {
      const adminToken = await token("admin", "ops");
      const open = await openDashboard(`#token=${adminToken}`);
      const { page } = open;

      await shows(open, '#status[data-state="live"]', "the live stream");
      // The token left the address bar, and stays in this tab's session only.
      expect(page.url()).to.equal(`${svc!.httpUrl}/dashboard/`);
      expect(await page.evaluate('sessionStorage.getItem("holdfast.dashboard.token")')).to.equal(adminToken);
      expect(await page.textContent("#principal")).to.match(/^token for admin:ops, expires /);

      await shows(open, row("DASH-A", { available: 10, "on-hand": 10, reserved: 0, "demand-status": "HEALTHY" }), "DASH-A");
      await shows(open, row("DASH-B", { available: 3, "on-hand": 3, "demand-status": "HEALTHY" }), "DASH-B");
      await shows(open, row("DASH-C", { available: 0, "on-hand": 0, "demand-status": "OUT_OF_STOCK" }), "DASH-C");
      expect(await page.$$eval("tr[data-sku]", (trs) => trs.map((tr) => tr.getAttribute("data-sku")))).to.deep.equal(["DASH-A", "DASH-B", "DASH-C"]);
      expect(await page.textContent('tr[data-sku="DASH-A"] td[data-field="name"]')).to.equal("Flash-sale sneaker");
      expect(await page.textContent('tr[data-sku="DASH-C"] td[data-field="demand"]')).to.equal("OUT_OF_STOCK");

      // A burst on DASH-A: 5 customers ask for 2 units each (10 on hand), a sixth is refused.
      const burstStart = Date.now();
      const holds = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => grpc!.createHold({ requestId: rid(), customerId: `buyer-${i}`, lines: [{ sku: "DASH-A", quantity: 2 }] })),
      );
      expect(holds.filter((h) => h.status === "fulfilled")).to.have.length(5);
      await shows(open, row("DASH-A", { available: 0, reserved: 10, "demand-status": "OUT_OF_STOCK" }), "DASH-A sold out");

      // 2 of DASH-B's 3 units held: 1 left is more than 10 % of the stock (1·10 > 3), still HEALTHY.
      const b = await grpc!.createHold({ requestId: rid(), customerId: "buyer-b", lines: [{ sku: "DASH-B", quantity: 2 }] });
      await shows(open, row("DASH-B", { available: 1, reserved: 2, "demand-status": "HEALTHY" }), "DASH-B after a hold of 2");
      // A buyer who joins the waitlist for 2 more: HIGH_DEMAND (someone waits), waitlist 1 entry / 2 units.
      await grpc!.createHold({ requestId: rid(), customerId: "buyer-w", lines: [{ sku: "DASH-B", quantity: 2 }], joinWaitlistIfShort: true });
      await shows(open, row("DASH-B", { available: 1, "waitlist-length": 1, "waitlist-units": 2, "demand-status": "HIGH_DEMAND" }), "DASH-B with a waitlist");
      // Releasing the hold promotes the waiter (2 of the 3 units held again, 1 left, nobody waiting).
      await grpc!.releaseHold({ requestId: rid(), reservationId: b.reservation!.id });
      await shows(open, row("DASH-B", { reserved: 2, "waitlist-length": 0, "waitlist-units": 0 }), "DASH-B after the promotion");

      // A SKU created while the page is open appears, with its name.
      await grpc!.createSku({ requestId: rid(), sku: "DASH-D", name: "Late arrival", initialOnHand: 5n });
      await shows(open, row("DASH-D", { available: 5, "demand-status": "HEALTHY" }), "a new SKU");
      await until("the new SKU's name", async () => (await page.textContent('tr[data-sku="DASH-D"] td[data-field="name"]')) === "Late arrival", SHOW_TIMEOUT_MS);

      // The report of DASH-A's burst, once the request log has its 6 attempts (written in batches after the answers).
      await until("6 attempts of DASH-A in the request log", async () => {
        const { report } = await grpc!.getFlashSaleReport({ sku: "DASH-A", startTime: timestampFromMs(burstStart - 60_000) });
        return report?.requests === 6n;
      });
      await page.click('tr[data-sku="DASH-A"] td[data-field="report"] button');
      await shows(open, '#report-status[data-state="shown"][data-sku="DASH-A"]', "the report");
      expect(await figure(open, "sku")).to.equal("DASH-A");
      expect(await figure(open, "requests")).to.equal("6");
      expect(await figure(open, "unique-customers")).to.equal("6");
      expect(await figure(open, "requests-granted")).to.equal("5");
      expect(await figure(open, "requests-refused")).to.equal("1");
      expect(await figure(open, "units-granted")).to.equal("10");
      // The window (last 15 minutes) began before the SKU existed: nothing was available at its start.
      expect(await figure(open, "units-at-start")).to.equal("0");
      expect(await figure(open, "units-available-at-end")).to.equal("0");
      expect(await figure(open, "oversell-units")).to.equal("0");
      expect(await figure(open, "jain-fairness-index")).to.equal("0.833"); // [2,2,2,2,2,0]: 100 / (6·20)
      expect(await figure(open, "refusal-INSUFFICIENT_STOCK")).to.equal("1 requests, 2 units");
      expect(await figure(open, "demand-status")).to.equal("OUT_OF_STOCK");
      // The three charts are drawn (ECharts, canvas renderer) with a size.
      for (const chart of ["grantsOverTime", "latency", "customerShares"]) {
        const size = await page.$eval(`.chart[data-chart="${chart}"] canvas`, (canvas) => [(canvas as unknown as { width: number }).width, (canvas as unknown as { height: number }).height]);
        expect(size[0], chart).to.be.greaterThan(100);
        expect(size[1], chart).to.be.greaterThan(100);
      }

      // The screenshot (kept next to the compiled test, for a look).
      const screenshot = fileURLToPath(new URL("dashboard.png", import.meta.url));
      await page.screenshot({ path: screenshot, fullPage: true, timeout: 10_000 });
      const png = await readFile(screenshot);
      expect(png.length).to.be.greaterThan(1000);
      expect(png.subarray(0, 8).equals(PNG_SIGNATURE), "PNG signature").to.equal(true);

      // One stream for the whole page (no polling), and nothing blocked by the page's policy.
      expect(open.calls.filter((c) => c.endsWith("WatchAvailability"))).to.deep.equal(["POST WatchAvailability"]);
      expect(open.log.filter((line) => /CSP|Content Security Policy|pageerror/i.test(line)), open.log.join("\n")).to.deep.equal([]);
    });

    it("takes a pasted token, and says clearly when the service refuses one", async () => {
      const open = await openDashboard();
      await shows(open, '#status[data-state="no-token"]', "that it needs a token");
      expect(open.calls).to.deep.equal([]);

      const forged = await token("admin", "ops", { secret: "not-the-service-secret-0123456789-abcdefghijkl" });
      await open.page.fill("#token-input", forged);
      await open.page.click('#token-form button[type="submit"]');
      await shows(open, '#status[data-state="auth-error"][data-code="Unauthenticated"]', "the refusal");
      expect(await open.page.textContent("#status")).to.match(/^the service refused the token \(Unauthenticated: .*\): paste a valid one$/);
      expect(await open.page.$$("tr[data-sku]")).to.have.length(0);

      // A customer's token works too: availability and reports are theirs to read.
      await open.page.fill("#token-input", await token("customer", "shopper-1"));
      await open.page.click('#token-form button[type="submit"]');
      await shows(open, '#status[data-state="live"]', "the live stream");
      await shows(open, row("DASH-A", { available: 0 }), "DASH-A");
      expect(await open.page.inputValue("#token-input")).to.equal("");
      await open.page.click('tr[data-sku="DASH-A"] td[data-field="report"] button');
      await shows(open, '#report-status[data-state="shown"][data-sku="DASH-A"]', "the report");

      // A service without GetFlashSaleReport (an older replica) answers Unimplemented: the page says so.
      await open.page.route("**/holdfast.inventory.v1.InventoryReservationService/GetFlashSaleReport", (route) =>
        route.fulfill({ status: 501, contentType: "application/json", body: JSON.stringify({ code: "unimplemented", message: "not here" }) }),
      );
      await open.page.selectOption("#report-sku", "DASH-B");
      await open.page.click('#report-form button[type="submit"]');
      await shows(open, '#report-status[data-state="unimplemented"][data-code="Unimplemented"]', "that reports are not served");
      expect(await open.page.textContent("#report-status")).to.match(/does not serve flash-sale reports yet/);

      await open.page.click("#forget-token");
      await shows(open, '#status[data-state="no-token"]', "that the token is gone");
      expect(await open.page.evaluate('sessionStorage.getItem("holdfast.dashboard.token")')).to.equal(null);
      expect(await open.page.$$("tr[data-sku]")).to.have.length(0);
    });
  });
});
