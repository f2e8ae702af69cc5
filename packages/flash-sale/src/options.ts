/**
 * The command line of `npm run flash-sale`: every option, its default, its
 * validation (a UsageError names the option and the rule), and --help.
 */
import { parseArgs } from "node:util";

export type Strategy = "pessimistic" | "optimistic";

/** Policy flags passed through to CreateSku's SkuPolicy (unset = the server default). */
export interface PolicyFlags {
  maxUnitsPerCustomer?: number;
  /** customer_attempt_rate_limit: at most `maxAttempts` attempts per customer in any `windowSeconds`. */
  rateLimit?: { maxAttempts: number; windowSeconds: number };
  abandonmentAwareTtl?: boolean;
}

/** What the burst does: everything but where it goes and with which tokens. */
export interface FlashSalePlan {
  /** Regular buyers: one customer each, one CreateHold (plus retries). */
  buyers: number;
  /** Units of the SKU (and of each extra cart SKU). */
  stock: number;
  strategy: Strategy;
  /** Calls in flight at most (CreateHold and ConfirmHold together). */
  concurrency: number;
  /** Units per line. */
  quantity: number;
  /** Bot customers, each making `botAttempts` CreateHold calls back to back with fresh request ids. */
  bots: number;
  botAttempts: number;
  /** Fraction of granted regular buyers who never confirm (their hold expires). */
  abandon: number;
  /** TTL of every hold, in seconds. */
  holdTtlSeconds: number;
  /** A confirming buyer waits a uniform random time in [0, thinkMs] before ConfirmHold. */
  thinkMs: number;
  /** Retries of a call with the same request id when the server says retrying may succeed (RetryInfo). */
  retries: number;
  /** SKUs per cart: 1 = the sale's SKU alone; n > 1 adds n − 1 SKUs, held all or nothing. */
  cartSkus: number;
  joinWaitlist: boolean;
  /** No new call starts after this many seconds from the start of the burst. */
  maxSeconds: number;
  /** Seed of the PRNG that orders buyers and bots and decides who abandons. */
  seed: number;
  /** Prefix of the SKU codes (a unique suffix is added per run). */
  skuPrefix: string;
  policy: PolicyFlags;
}

export interface CliOptions extends FlashSalePlan {
  /** host:port of the reservation-service's gRPC port. */
  target: string;
  allowRemote: boolean;
  adminToken?: string;
  serviceToken?: string;
  /** Where the HTML report goes; undefined = reports/flash-sale-report-<sku>.html. */
  out?: string;
  html: boolean;
}

export class UsageError extends Error {}

export const DEFAULT_GRPC_PORT = 50051;

export const USAGE = `usage: npm run flash-sale -- [options]

Provisions a fresh SKU on the running reservation-service, fires a burst of
CreateHold calls at it over gRPC, then prints GetFlashSaleReport next to the
simulator's own tally and writes an HTML report.

Target and credentials
  --target <host:port>         reservation-service gRPC port (default 127.0.0.1:$GRPC_PORT, else 127.0.0.1:${DEFAULT_GRPC_PORT})
  --allow-remote               allow a target that is not a loopback address
  --admin-token <jwt>          admin token for CreateSku and the report (or HOLDFAST_ADMIN_TOKEN)
  --service-token <jwt>        service token for CreateHold / ConfirmHold (or HOLDFAST_SERVICE_TOKEN)
                               Without them, tokens are minted with the key \`npm run token\` uses
                               (AUTH_JWT_SECRET, else the dev stack's .holdfast/dev-jwt-secret).

The sale
  --buyers <n>                 regular buyers, one customer each (default 1000)
  --stock <n>                  units of the SKU (default 100)
  --strategy <s>               pessimistic | optimistic (default pessimistic)
  --concurrency <n>            calls in flight at most (default 50)
  --quantity <n>               units per line (default 1)
  --bots <n>                   bot customers that hammer (default 0)
  --bot-attempts <k>           CreateHold calls per bot, back to back, fresh request ids (default 20)
  --abandon <fraction>         share of granted buyers who never confirm, 0-1 (default 0)
  --hold-ttl <seconds>         TTL of every hold (default 5)
  --think-ms <ms>              a confirming buyer waits up to this long before ConfirmHold (default 200)
  --retries <n>                retries with the same request id when the server answers
                               with RetryInfo (lock timeout, conflicts, rate limit) (default 2)
  --cart-skus <n>              SKUs per cart, held all or nothing (default 1)
  --join-waitlist              CreateHold with join_waitlist_if_short
  --max-seconds <s>            no call starts after this long (default 60)
  --seed <n>                   PRNG seed (default: random, printed)
  --sku-prefix <code>          prefix of the SKU codes (default FLASH)

SKU policy (passed to CreateSku as given; the server may refuse what it does not implement)
  --max-units-per-customer <n> SkuPolicy.max_units_per_customer
  --rate-limit <n>/<seconds>s  SkuPolicy.customer_attempt_rate_limit, e.g. 5/10s
  --abandonment-aware-ttl      SkuPolicy.abandonment_aware_ttl

Output
  --out <file>                 HTML report (default reports/flash-sale-report-<sku>.html)
  --no-html                    do not write the HTML report
  --help                       this text
`;

const OPTIONS = {
  target: { type: "string" },
  "allow-remote": { type: "boolean" },
  "admin-token": { type: "string" },
  "service-token": { type: "string" },
  buyers: { type: "string" },
  stock: { type: "string" },
  strategy: { type: "string" },
  concurrency: { type: "string" },
  quantity: { type: "string" },
  bots: { type: "string" },
  "bot-attempts": { type: "string" },
  abandon: { type: "string" },
  "hold-ttl": { type: "string" },
  "think-ms": { type: "string" },
  retries: { type: "string" },
  "cart-skus": { type: "string" },
  "join-waitlist": { type: "boolean" },
  "max-seconds": { type: "string" },
  seed: { type: "string" },
  "sku-prefix": { type: "string" },
  "max-units-per-customer": { type: "string" },
  "rate-limit": { type: "string" },
  "abandonment-aware-ttl": { type: "boolean" },
  out: { type: "string" },
  "no-html": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

function integer(name: string, value: string | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`--${name}: "${value}" is not a whole number`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`--${name}: ${n} is out of range (${min}-${max})`);
  return n;
}

/** 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** host:port (host may be [v6]); returns the host. */
function targetHost(target: string): string {
  const match = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(target);
  if (match === null || Number(match[2]) < 1 || Number(match[2]) > 65535) throw new UsageError(`--target: "${target}" is not host:port`);
  return match[1]!;
}

/** SKU code rule (IDENTIFIERS in resources.proto), leaving room for the run suffix. */
const SKU_PREFIX = /^[A-Za-z0-9][A-Za-z0-9._-]{0,29}$/;

/** Parses and validates `argv` (without node and the script); `env` gives the defaults read from the environment. */
export function parseCli(argv: string[], env: NodeJS.ProcessEnv = process.env): CliOptions {
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; strict: true; allowPositionals: false }>>["values"];
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const defaultPort = integer("target (GRPC_PORT)", env.GRPC_PORT || undefined, DEFAULT_GRPC_PORT, 1, 65535);
  const target = values.target ?? `127.0.0.1:${defaultPort}`;
  const host = targetHost(target);
  const allowRemote = values["allow-remote"] ?? false;
  if (!isLoopback(host) && !allowRemote) throw new UsageError(`--target: ${host} is not a loopback address; add --allow-remote to send a load test there`);

  const strategy = values.strategy ?? "pessimistic";
  if (strategy !== "pessimistic" && strategy !== "optimistic") throw new UsageError(`--strategy: "${strategy}" is not pessimistic or optimistic`);

  let abandon = 0;
  if (values.abandon !== undefined) {
    abandon = Number(values.abandon);
    if (values.abandon.trim() === "" || !Number.isFinite(abandon) || abandon < 0 || abandon > 1) throw new UsageError(`--abandon: "${values.abandon}" is not a fraction between 0 and 1`);
  }

  const skuPrefix = values["sku-prefix"] ?? "FLASH";
  if (!SKU_PREFIX.test(skuPrefix)) throw new UsageError(`--sku-prefix: "${skuPrefix}" must be 1-30 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`);

  const policy: PolicyFlags = {};
  if (values["max-units-per-customer"] !== undefined) policy.maxUnitsPerCustomer = integer("max-units-per-customer", values["max-units-per-customer"], 0, 1, 1_000_000);
  if (values["rate-limit"] !== undefined) {
    const match = /^(\d+)\/(\d+)s?$/.exec(values["rate-limit"].trim());
    if (match === null) throw new UsageError(`--rate-limit: "${values["rate-limit"]}" is not <attempts>/<seconds>s, e.g. 5/10s`);
    const maxAttempts = integer("rate-limit (attempts)", match[1], 0, 1, 1_000_000);
    const windowSeconds = integer("rate-limit (window seconds)", match[2], 0, 1, 3600);
    policy.rateLimit = { maxAttempts, windowSeconds };
  }
  if (values["abandonment-aware-ttl"]) policy.abandonmentAwareTtl = true;

  const seed = integer("seed", values.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1);
  const adminToken = values["admin-token"] ?? (env.HOLDFAST_ADMIN_TOKEN || undefined);
  const serviceToken = values["service-token"] ?? (env.HOLDFAST_SERVICE_TOKEN || undefined);
  if ((adminToken === undefined) !== (serviceToken === undefined)) {
    throw new UsageError("--admin-token and --service-token go together (CreateSku needs admin, CreateHold and ConfirmHold need service); give both, or neither to mint them locally");
  }
  if (values.out !== undefined && values["no-html"]) throw new UsageError("--out and --no-html contradict each other");
  if (values.out !== undefined && values.out.trim() === "") throw new UsageError("--out: empty file name");

  const buyers = integer("buyers", values.buyers, 1000, 0, 1_000_000);
  const bots = integer("bots", values.bots, 0, 0, 100_000);
  if (buyers + bots === 0) throw new UsageError("--buyers and --bots are both 0: nobody would buy");

  return {
    target,
    allowRemote,
    adminToken,
    serviceToken,
    buyers,
    stock: integer("stock", values.stock, 100, 0, 1_000_000_000),
    strategy,
    concurrency: integer("concurrency", values.concurrency, 50, 1, 10_000),
    quantity: integer("quantity", values.quantity, 1, 1, 1_000_000),
    bots,
    botAttempts: integer("bot-attempts", values["bot-attempts"], 20, 1, 10_000),
    abandon,
    holdTtlSeconds: integer("hold-ttl", values["hold-ttl"], 5, 1, 3600),
    thinkMs: integer("think-ms", values["think-ms"], 200, 0, 60_000),
    retries: integer("retries", values.retries, 2, 0, 100),
    cartSkus: integer("cart-skus", values["cart-skus"], 1, 1, 50),
    joinWaitlist: values["join-waitlist"] ?? false,
    maxSeconds: integer("max-seconds", values["max-seconds"], 60, 1, 3600),
    seed,
    skuPrefix,
    policy,
    out: values.out,
    html: !values["no-html"],
  };
}
