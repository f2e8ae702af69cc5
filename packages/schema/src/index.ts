/**
 * @holdfast/schema: the shared PostgreSQL schema of Holdfast.
 *
 * - `createKnex`: the database connection both services use (pg driver, int8/numeric as
 *   numbers, application_name, statement_timeout).
 * - `migrateLatest` and friends: run the migrations (explicit list, `holdfast_migrations`).
 * - Row types for every table, status value sets, and Knex table typing
 *   (`knex('inventory')` is typed once this package is imported).
 */
export {
  createKnex,
  parseDatabaseUrl,
  redactDatabaseUrl,
  parseInt8,
  parseNumeric,
  holdfastTypeParsers,
  DatabaseUrlError,
  type CreateKnexOptions,
} from './database.js';
export {
  migrateLatest,
  migrateUp,
  migrateDown,
  migrateRollbackAll,
  migrationStatus,
  migratorConfig,
  MIGRATIONS_TABLE,
  MIGRATIONS_LOCK_TABLE,
  type MigrationRunResult,
  type MigrationStatus,
  type AppliedMigration,
} from './migrate.js';
export { migrations, migrationSource, HoldfastMigrationSource, type HoldfastMigration } from './migrations/index.js';
export * from './rows.js';
export * from './limits.js';
export { MIGRATION_COMMANDS, MIGRATION_USAGE, isMigrationCommand, runMigrationCommand, type MigrationCommand } from './commands.js';
export { assertDatabaseReady } from './readiness.js';
export { query, named, transaction, commitWith, builtOnce, PgTransaction, PREPARED_PER_CONNECTION, isStalePlan, type Db } from './query.js';
export {
  applyCounterChanges,
  CounterChangeRefused,
  lockInventoryRows,
  readInventoryRows,
  claimReclaimableHolds,
  expireClaimedHolds,
  recordDrift,
  skuOrder,
  type CounterChange,
  type ChangeOrigin,
  type ApplyOptions,
  type AppliedChanges,
  type HeldLine,
  type LedgerCounters,
} from './ledger.js';
export {
  promoteWaiting,
  promoteAndExpireWaiting,
  promotionTerms,
  DEFAULT_HOLD_TERMS,
  closeWaiting,
  moveWaitlistCounters,
  settlePromotedEntries,
  type HoldTermSettings,
  type Promotion,
  type WaitlistOutcome,
} from './waitlist.js';
export {
  lockCustomerUnits,
  customerActiveUnits,
  admitAttempts,
  abandonmentRecords,
  abandonmentAwareTtl,
  ABANDONMENT_WINDOW_MS,
  ABANDONMENT_GRACE,
  CUSTOMER_UNITS_LOCK_CLASS,
  type AttemptAdmission,
  type AbandonmentRecord,
} from './fairness.js';
export { recountSkus, skuFilter, type Recount, type SkuRecount, type LineDisagreement } from './recount.js';
export {
  EXPIRY_CHANNEL,
  INVENTORY_CHANNEL,
  announceExpiry,
  parseExpiryPayload,
  notifyInventoryChanged,
  NotificationListener,
  parseInventoryPayload,
  type ListenerOptions,
} from './notifications.js';
export { inventoryInvariantViolations } from './invariants.js';
