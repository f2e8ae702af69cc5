/**
 * The host's wall clock in microseconds, for the request log's received_at (the order
 * FIFO fairness is judged by). Date.now() has millisecond resolution, and a flash sale
 * brings many attempts per millisecond: attempts received in the same instant have no
 * order, so a coarse clock hides the order the report is about. This reads the
 * monotonic clock (performance.now(), sub-microsecond) from a wall-clock anchor, and
 * re-anchors when the two drift apart by more than a millisecond (NTP steps, a
 * suspended VM), so it stays within 1 ms of Date.now() and is monotonic between
 * re-anchorings.
 */
let anchorUs = Date.now() * 1000 - performance.now() * 1000;

export function nowMicros(): number {
  const monotonicUs = performance.now() * 1000;
  const wallUs = Date.now() * 1000;
  let t = anchorUs + monotonicUs;
  if (Math.abs(t - wallUs) > 1000) {
    anchorUs = wallUs - monotonicUs;
    t = wallUs;
  }
  return Math.floor(t);
}
