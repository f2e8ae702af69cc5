// A browser test (issue 6): a page built with @connectrpc/connect-web, in headless
// Chromium on another origin than the service, watches a SKU with WatchAvailability
// (Connect protocol over fetch, bearer token, CORS) and shows its availability
// change live as a hold is made and released through gRPC.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { expect } from "chai";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { InventoryReservationService } from "@holdfast/contracts";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { testCaller, token } from "../support/auth.js";
import { bundlePage, CHROMIUM_PATH, chromiumInstalled, launchChromium, servePage, type PageServer } from "../support/browser.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { startService, type ServiceProcess } from "../support/processes.js";

const SKU = "BROWSER-1";
const WATCH_PATH = "/holdfast.inventory.v1.InventoryReservationService/WatchAvailability";
/** How long the page may take to show a change (it normally takes well under a second). */
const SHOW_TIMEOUT_MS = 10_000;

let requestCounter = 0;
const rid = () => `browser-${process.pid}-${++requestCounter}`;

describe("browser: a connect-web page in Chromium watches availability live", function () {
  this.timeout(60_000);
  let db: TestDatabase | undefined;
  let svc: ServiceProcess | undefined;
  let setup: GrpcJsClient<typeof InventoryReservationService> | undefined;
  let pageServer: PageServer | undefined;
  let browser: Browser | undefined;
  let tempDir: string | undefined;

  before(async function () {
    if (!chromiumInstalled()) {
      if (process.env.CI) throw new Error(`${CHROMIUM_PATH} is missing: CI must install Debian's chromium (.ci/run does)`);
      console.log(`    (skipped: ${CHROMIUM_PATH} is missing; install it with: apt-get install -y chromium)`);
      this.skip();
    }
    tempDir = await mkdtemp(path.join(tmpdir(), "holdfast-browser-"));
    const [database, bundle] = await Promise.all([createTestDatabase("browser"), bundlePage()]);
    db = database;
    pageServer = await servePage(bundle);
    [svc, browser] = await Promise.all([startService("reservation-service", db.url, { CORS_ALLOWED_ORIGINS: pageServer.origin }), launchChromium()]);
    setup = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    await setup.createSku({ requestId: rid(), sku: SKU, name: "Browser test", initialOnHand: 10n });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    setup?.close();
    await pageServer?.close();
    await svc?.stop();
    await db?.drop();
    if (tempDir !== undefined) await rm(tempDir, { recursive: true, force: true });
  });

  interface RpcRequest {
    url: string;
    method: string;
    contentType: string;
    authorization: string;
    origin: string;
  }

  interface OpenPage {
    page: Page;
    /** What the page logged (console, uncaught errors), for failure messages. */
    log: string[];
    /** The requests the page sent to the service, with their headers. */
    rpcRequests(): Promise<RpcRequest[]>;
    /** Main-frame navigations so far (1 after the first load). */
    navigations(): number;
  }

  const contexts: BrowserContext[] = [];
  afterEach(async () => {
    await Promise.all(contexts.splice(0).map((context) => context.close().catch(() => undefined)));
  });

  /** Opens the page in a fresh browser context, watching `SKU` as the holder of `jwt`. */
  async function openPage(jwt: string): Promise<OpenPage> {
    const context = await browser!.newContext({ viewport: { width: 800, height: 400 } });
    contexts.push(context);
    const page = await context.newPage();
    const log: string[] = [];
    page.on("console", (msg) => log.push(`[${msg.type()}] ${msg.text()}`));
    page.on("pageerror", (err) => log.push(`[pageerror] ${err.message}`));
    const requests: RpcRequest[] = [];
    const seen: Promise<void>[] = [];
    page.on("request", (req) => {
      if (!req.url().startsWith(svc!.httpUrl)) return;
      const entry: RpcRequest = { url: req.url(), method: req.method(), contentType: "", authorization: "", origin: "" };
      requests.push(entry);
      seen.push(
        req.allHeaders().then((headers) => {
          entry.contentType = headers["content-type"] ?? "";
          entry.authorization = headers.authorization ?? "";
          entry.origin = headers.origin ?? "";
        }),
      );
    });
    let navigations = 0;
    page.on("framenavigated", (frame) => {
      if (frame === page.mainFrame()) navigations++;
    });
    await page.goto(pageServer!.url({ baseUrl: svc!.httpUrl, token: jwt, skus: SKU }), { waitUntil: "load", timeout: 15_000 });
    return {
      page,
      log,
      rpcRequests: async () => {
        await Promise.all(seen);
        return requests;
      },
      navigations: () => navigations,
    };
  }

  async function describePage({ page, log }: OpenPage): Promise<string> {
    const status = await page.textContent("#status").catch(() => "?");
    const rows = await page.$$eval("tr[data-sku]", (trs) => trs.map((tr) => JSON.stringify((tr as unknown as { dataset: Record<string, string> }).dataset))).catch(() => []);
    return `status "${status}", rows [${rows.join(", ")}], console:\n${log.join("\n")}`;
  }

  const STOPPED = '#status[data-state="error"], #status[data-state="ended"]';

  /** Waits until the SKU's row shows `expected`, failing early (with the page's words) if the stream failed or ended. */
  async function shows(open: OpenPage, expected: { available: number; onHand: number; reserved: number }): Promise<void> {
    const row = `tr[data-sku="${SKU}"][data-available="${expected.available}"][data-on-hand="${expected.onHand}"][data-reserved="${expected.reserved}"]`;
    try {
      await open.page.waitForSelector(`${row}, ${STOPPED}`, { state: "attached", timeout: SHOW_TIMEOUT_MS });
    } catch (err) {
      throw new Error(`the page did not show ${JSON.stringify(expected)}: ${await describePage(open)}\n${(err as Error).message}`);
    }
    if ((await open.page.$(STOPPED)) !== null) throw new Error(`the page's stream stopped: ${await describePage(open)}`);
  }

  it("shows 10 available, 7 after a hold of 3 made over gRPC, 10 again after its release, without reloading", async () => {
    const customerToken = await token("customer", "browser-shopper");
    const open = await openPage(customerToken);
    const { page } = open;

    await shows(open, { available: 10, onHand: 10, reserved: 0 });
    expect(await page.getAttribute("#status", "data-state")).to.equal("live");

    const held = await setup!.createHold({ requestId: rid(), customerId: "browser-shopper", lines: [{ sku: SKU, quantity: 3 }] });
    await shows(open, { available: 7, onHand: 10, reserved: 3 });

    await setup!.releaseHold({ requestId: rid(), reservationId: held.reservation!.id });
    await shows(open, { available: 10, onHand: 10, reserved: 0 });

    // Versions only go forward: created at 1, then the hold, then the release.
    expect(Number(await page.getAttribute(`tr[data-sku="${SKU}"]`, "data-version"))).to.be.at.least(3);

    // It was one cross-origin Connect stream, authenticated, opened once (no polling, no reload).
    const requests = await open.rpcRequests();
    expect(open.navigations(), "page navigations").to.equal(1);
    expect(requests.map((r) => `${r.method} ${new URL(r.url).pathname}`)).to.deep.equal([`POST ${WATCH_PATH}`]);
    expect(requests[0].contentType).to.equal("application/connect+proto");
    expect(requests[0].authorization).to.equal(`Bearer ${customerToken}`);
    expect(requests[0].origin).to.equal(pageServer!.origin);

    const screenshot = path.join(tempDir!, "availability.png");
    await page.screenshot({ path: screenshot, fullPage: true, timeout: 10_000 });
    const png = await readFile(screenshot);
    expect(png.length).to.be.greaterThan(100);
    expect(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), "PNG signature").to.equal(true);
  });

  it("shows the error when the service refuses the token (UNAUTHENTICATED reaches the page through CORS)", async () => {
    const forged = await token("customer", "browser-shopper", { secret: "not-the-service-secret-0123456789-abcdefghijkl" });
    const open = await openPage(forged);
    try {
      await open.page.waitForSelector('#status[data-state="error"]', { state: "attached", timeout: SHOW_TIMEOUT_MS });
    } catch (err) {
      throw new Error(`the page showed no error: ${await describePage(open)}\n${(err as Error).message}`);
    }
    expect(await open.page.getAttribute("#status", "data-code")).to.equal("Unauthenticated");
    expect(await open.page.textContent("#status")).to.match(/^error: Unauthenticated: /);
    expect(await open.page.$$("tr[data-sku]")).to.have.length(0);
  });
});
