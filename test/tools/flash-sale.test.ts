// The flash-sale simulator (`npm run flash-sale`, packages/flash-sale) against a real
// reservation-service: per strategy, the burst's client tally equals the database
// and GetFlashSaleReport, nothing is oversold, and the printed tables carry the
// figures; once as the CLI in its own process; and its option checks.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { InventoryReservationService } from "@holdfast/contracts";
import {
  comparisonTable,
  fetchFlashSaleReport,
  parseCli,
  reportTable,
  runFlashSale,
  tallyTable,
  UsageError,
  type FlashSalePlan,
  type Strategy,
} from "@holdfast/flash-sale";
import { createGrpcJsClient, type GrpcJsClient } from "@holdfast/runtime";
import { createKnex, query } from "@holdfast/schema";
import type { Knex } from "knex";
import { testCaller, token } from "../support/auth.js";
import { createTestDatabase, type TestDatabase } from "../support/database.js";
import { assertInvariants, checkConsistencyClean } from "../support/invariants.js";
import { startService, type ServiceProcess } from "../support/processes.js";

const CLI = fileURLToPath(import.meta.resolve("@holdfast/flash-sale/cli"));

/** Small and bounded: 400 buyers and 3 bots for 40 units, 32 in flight. */
const PLAN: FlashSalePlan = {
  buyers: 400,
  stock: 40,
  strategy: "pessimistic",
  concurrency: 32,
  quantity: 1,
  bots: 3,
  botAttempts: 10,
  abandon: 0.25,
  holdTtlSeconds: 30,
  thinkMs: 50,
  retries: 2,
  cartSkus: 1,
  joinWaitlist: false,
  maxSeconds: 40,
  seed: 7,
  skuPrefix: "SIM",
  policy: {},
};

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ["--enable-source-maps", CLI, ...args], { env: { PATH: process.env.PATH, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the CLI did not exit within 90 s\n${stdout}\n${stderr}`));
    }, 90_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("flash-sale simulator", function () {
  this.timeout(120_000);
  let db: TestDatabase;
  let knex: Knex;
  let svc: ServiceProcess;
  let client: GrpcJsClient<typeof InventoryReservationService>;
  let scratch: string;

  before(async () => {
    db = await createTestDatabase("flash-sale-sim");
    knex = createKnex({ url: db.url, poolMax: 2 });
    svc = await startService("reservation-service", db.url);
    client = createGrpcJsClient(InventoryReservationService, svc.grpcAddress, undefined, testCaller);
    scratch = await mkdtemp(path.join(tmpdir(), "holdfast-flash-sale-"));
  });
  after(async () => {
    client?.close();
    await svc?.stop();
    await knex?.destroy();
    await db?.drop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  /** The sale SKU's holds, confirmed holds and request-log rows, from the database. */
  async function stored(sku: string) {
    const holds = await query<{ id: string; confirmed: boolean }>(
      knex,
      `SELECT r.id, r.confirmed_at IS NOT NULL AS confirmed
         FROM reservation_items i JOIN reservations r ON r.id = i.reservation_id
        WHERE i.sku_code = ? AND r.type = 'HOLD'`,
      [sku],
    );
    const [logged] = await query<{ n: number }>(knex, `SELECT count(*)::int AS n FROM hold_attempts WHERE sku_code = ? AND NOT replayed`, [sku]);
    const [inventory] = await query<{ on_hand: number; reserved: number; allocated: number }>(knex, `SELECT on_hand, reserved, allocated FROM inventory WHERE sku_code = ?`, [sku]);
    return { holds, logged: logged!.n, inventory: inventory! };
  }

  for (const strategy of ["pessimistic", "optimistic"] as Strategy[]) {
    it(`${strategy}: the client tally equals the database and the report; nothing oversold`, async () => {
      const run = await runFlashSale(client, { ...PLAN, strategy });
      const { tally } = run;
      const sku = run.skus[0]!.sku;
      expect(run.cutShort).to.equal(false);
      expect(tally.notSent).to.equal(0);
      expect(tally.unanswered).to.deep.equal({});
      // Every buyer and every bot attempt was answered; retries are attempts too.
      expect(tally.attempts).to.equal(PLAN.buyers + PLAN.bots * PLAN.botAttempts + tally.retries);

      const { report, caughtUp } = await fetchFlashSaleReport(client, run);
      expect(caughtUp).to.equal(true);
      const db = await stored(sku);
      // Granted holds: the client's are the database's, one by one.
      expect(db.holds.map((h) => h.id).sort()).to.deep.equal([...tally.holdIds].sort());
      expect(db.holds.filter((h) => h.confirmed)).to.have.length(tally.confirmed);
      expect(tally.confirmed + tally.abandoned).to.equal(tally.granted);
      expect(db.logged).to.equal(tally.attempts);
      // Never oversold: by the counters, by the ledger and by the report.
      expect(tally.unitsGranted).to.be.at.most(PLAN.stock);
      expect(db.inventory.reserved + db.inventory.allocated).to.be.at.most(db.inventory.on_hand);
      await assertInvariants(knex, [sku]);
      await checkConsistencyClean(client, [sku]);
      expect(report.oversellUnits).to.equal(0n);
      // The report counts what the client saw.
      expect(Number(report.requests)).to.equal(tally.attempts);
      expect(Number(report.requestsGranted)).to.equal(tally.granted);
      expect(Number(report.unitsGranted)).to.equal(tally.unitsGranted);
      expect(Number(report.requestsRefused)).to.equal(Object.values(tally.refused).reduce((a, b) => a + b, 0));
      expect(Number(report.unitsAllocated)).to.equal(tally.confirmed);
      expect(Number(report.unitsAtStart)).to.equal(PLAN.stock);
      if (strategy === "pessimistic") {
        // The row lock serves everyone in turn: it sells out, nothing refused for contention, nothing undersold.
        expect(Object.keys(tally.refused)).to.deep.equal(["INSUFFICIENT_STOCK"]);
        expect(tally.unitsGranted).to.equal(PLAN.stock);
        expect(report.undersellUnits).to.equal(0n);
      }

      // The printed tables carry the figures.
      const printed = [reportTable(report), comparisonTable(run, report), tallyTable(run)].join("\n");
      for (const label of [
        "requests",
        "unique customers",
        "units at start",
        "units granted",
        "units allocated",
        "oversell units",
        "undersell units",
        "FIFO inversions",
        "Jain's fairness index",
        "largest customer share",
        "time to grant",
        "units expired / re-sold",
        "waitlist joins / promotions / allocated",
        "refused: INSUFFICIENT_STOCK",
        "client latency",
        "throughput",
      ]) {
        expect(printed).to.include(label);
      }
      expect(printed).to.match(new RegExp(`│ requests \\(attempts\\)\\s+│ ${tally.attempts.toLocaleString("en-US")}\\s+│ ${tally.attempts.toLocaleString("en-US")}\\s+│ =`));
      expect(printed).to.not.include("≠");
    });
  }

  it("--join-waitlist: the short are waitlisted, and the report counts them as the client did", async () => {
    const run = await runFlashSale(client, { ...PLAN, buyers: 60, stock: 6, bots: 0, abandon: 0, joinWaitlist: true });
    const { report } = await fetchFlashSaleReport(client, run);
    expect([run.tally.granted, run.tally.waitlisted, Object.keys(run.tally.refused).length]).to.deep.equal([6, 54, 0]);
    expect([report.requestsGranted, report.requestsWaitlisted, report.waitlistJoins, report.requestsRefused]).to.deep.equal([6n, 54n, 54n, 0n]);
    expect(comparisonTable(run, report)).to.not.include("≠");
    await assertInvariants(knex, [run.skus[0]!.sku]);
  });

  it("a time limit stops new holds and says so; granted holds are still confirmed", async () => {
    const abort = new AbortController();
    const run = await runFlashSale(client, { ...PLAN, bots: 0, abandon: 0, concurrency: 4 }, {
      signal: abort.signal,
      onProgress: (p) => p.granted >= 5 && abort.abort(),
    });
    expect(run.cutShort).to.equal(true);
    expect(run.tally.notSent).to.be.greaterThan(0);
    expect(run.tally.attempts + run.tally.notSent).to.equal(PLAN.buyers + run.tally.retries); // each first attempt or retry: answered or not sent
    expect(run.tally.confirmed).to.equal(run.tally.granted);
    expect(tallyTable(run)).to.include("(cut short)");
  });

  it("the CLI, in its own process: provisions, runs, prints the report and the tally", async () => {
    const out = path.join(scratch, "report.html");
    const result = await runCli(
      ["--target", svc.grpcAddress, "--buyers", "200", "--stock", "20", "--concurrency", "16", "--bots", "2", "--bot-attempts", "5", "--cart-skus", "2", "--seed", "11", "--out", out],
      { HOLDFAST_ADMIN_TOKEN: await token("admin", "sim-admin"), HOLDFAST_SERVICE_TOKEN: await token("service", "sim-checkout") },
    );
    expect(result.code, result.stderr).to.equal(0);
    const sku = /^SKU (\S+)/m.exec(result.stdout)?.[1];
    expect(sku, result.stdout).to.be.a("string");
    expect(result.stdout).to.match(new RegExp(`GetFlashSaleReport\\s+│ ${sku}\\s`));
    expect(result.stdout).to.match(/│ oversell units\s+│ 0\s+│/);
    expect(result.stdout).to.match(/│ units at start\s+│ 20\s+│/);
    expect(result.stdout).to.match(/│ requests \(attempts\)\s+│ (\d+)\s+│ \1\s+│ =/);
    expect(result.stdout).to.not.include("≠");
    // Not a terminal: progress as periodic lines on stderr.
    expect(result.stderr).to.match(/progress: \d+\/202 customers done/);
    // The cart SKU was held with it, all or nothing: the same holds on both.
    const [main, extra] = await Promise.all([stored(sku!), stored(`${sku}-X1`)]);
    expect(main.holds.map((h) => h.id).sort()).to.deep.equal(extra.holds.map((h) => h.id).sort());
    await assertInvariants(knex, [sku!, `${sku}-X1`]);
    // The HTML report: written where asked, with its three charts as inline SVG.
    expect(result.stdout).to.include(`HTML report: ${out}`);
    const html = await readFile(out, "utf8");
    expect(html).to.include(sku);
    expect(html.match(/<svg/g) ?? []).to.have.length.of.at.least(3);
  });

  it("options: defaults, and every bad value refused with the option named", () => {
    const defaults = parseCli([], {});
    expect(defaults).to.include({ target: "127.0.0.1:50051", buyers: 1000, stock: 100, strategy: "pessimistic", concurrency: 50, cartSkus: 1, html: true });
    expect(parseCli([], { GRPC_PORT: "51071" }).target).to.equal("127.0.0.1:51071");
    expect(parseCli(["--rate-limit", "5/10s", "--max-units-per-customer", "2", "--abandonment-aware-ttl"], {}).policy).to.deep.equal({
      rateLimit: { maxAttempts: 5, windowSeconds: 10 },
      maxUnitsPerCustomer: 2,
      abandonmentAwareTtl: true,
    });
    const refused = (args: string[], pattern: RegExp) => expect(() => parseCli(args, {})).to.throw(UsageError, pattern);
    refused(["--buyers", "ten"], /--buyers: "ten" is not a whole number/);
    refused(["--stock", "-1"], /--stock/);
    refused(["--concurrency", "0"], /--concurrency: 0 is out of range/);
    refused(["--strategy", "yolo"], /--strategy/);
    refused(["--abandon", "1.5"], /--abandon/);
    refused(["--hold-ttl", "0"], /--hold-ttl/);
    refused(["--rate-limit", "often"], /--rate-limit/);
    refused(["--target", "db.internal:50051"], /not a loopback address.*--allow-remote/);
    refused(["--target", "localhost"], /--target: "localhost" is not host:port/);
    refused(["--admin-token", "x"], /go together/);
    refused(["--buyers", "0", "--bots", "0"], /nobody would buy/);
    refused(["--sku-prefix", "-x"], /--sku-prefix/);
    refused(["--wat"], /Unknown option '--wat'/);
    refused(["extra"], /positional/);
    expect(parseCli(["--target", "10.1.2.3:50051", "--allow-remote"], {}).target).to.equal("10.1.2.3:50051");
  });
});
