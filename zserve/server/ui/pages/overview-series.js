// The overview's live series: GET /metrics sampled every few seconds, rates from the counters'
// deltas and latency percentiles from the histogram buckets' deltas (what happened between two
// samples, not since the server started), kept in a ring buffer of the last minutes.

export const POLL_MS = 2500;
export const WINDOW_S = 300;
// how an invocation counts as an error (a cancel is someone's choice, not an error)
export const ERROR_STATUSES = ["failed", "timeout", "invalid", "rejected"];

function errorsOf(doc) {
  const by = doc.invocations?.by_status || {};
  return ERROR_STATUSES.reduce((sum, s) => sum + (by[s] || 0), 0);
}

// The upper bound (ms) of the bucket that holds quantile q of the counts between two samples
// (cumulative [[le_ms | null for +Inf, count], ...]), as the server computes its own: null when
// nothing happened or when it lies beyond the largest finite bound.
export function quantile(before, after, q) {
  if (!after || !before || after.length !== before.length) return null;
  const deltas = after.map(([le, count], i) => [le, count - before[i][1]]);
  const total = deltas[deltas.length - 1][1];
  if (!(total > 0)) return null;
  const target = q * total;
  for (const [le, count] of deltas) if (count >= target) return le;
  return null;
}

export class Series {
  constructor(windowS = WINDOW_S) {
    this.windowS = windowS;
    this.t = [];
    this.rps = [];
    this.eps = [];
    this.p50 = [];
    this.p95 = [];
    this.p99 = [];
    this.n = []; // requests between a point and the sample before it
    this.last = null; // {t, total, errors, buckets}
  }

  // a gap (the tab was hidden): the next sample only sets the baseline
  pause() {
    this.last = null;
  }

  add(doc, tSeconds) {
    const now = {
      t: tSeconds,
      total: doc.invocations?.total || 0,
      errors: errorsOf(doc),
      buckets: doc.latency_ms?.buckets || null,
    };
    const prev = this.last;
    this.last = now;
    if (!prev) {
      // the baseline: no rate yet (and a break in the lines where samples were not taken)
      this.push(tSeconds, 0, null, null, null, null, null);
      return;
    }
    const dt = now.t - prev.t;
    if (dt <= 0 || now.total < prev.total) return; // a clock step or a reset: start again
    this.push(
      tSeconds,
      now.total - prev.total,
      (now.total - prev.total) / dt,
      Math.max(0, now.errors - prev.errors) / dt,
      quantile(prev.buckets, now.buckets, 0.5),
      quantile(prev.buckets, now.buckets, 0.95),
      quantile(prev.buckets, now.buckets, 0.99),
    );
  }

  push(t, n, rps, eps, p50, p95, p99) {
    this.t.push(t);
    this.n.push(n);
    this.rps.push(rps);
    this.eps.push(eps);
    this.p50.push(p50);
    this.p95.push(p95);
    this.p99.push(p99);
    while (this.t.length && this.t[0] < t - this.windowS) {
      for (const a of [this.t, this.n, this.rps, this.eps, this.p50, this.p95, this.p99]) a.shift();
    }
  }

  // requests counted in the window
  requests() {
    return this.n.reduce((a, b) => a + b, 0);
  }
}
