import type { Metric, Registry } from "prom-client";

type Labels = Record<string, string>;
type Value = { labels: Record<string, string | number>; value: number; metricName?: string };

/** One labelled series of a counter: the caller keeps it and adds to `value`. */
export interface CounterSeries {
  value: number;
}

/** One labelled series of a histogram, fed through its family's `observe`. */
export interface HistogramSeries {
  readonly buckets: number[];
  sum: number;
  count: number;
}

/** What both families share: registration, and the series in the order they were first used. */
abstract class SeriesFamily<S> {
  abstract readonly type: "counter" | "histogram";
  readonly aggregator = "sum";
  protected readonly all: { labels: Labels; series: S }[] = [];

  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  /** A new series with these labels (first use order is the scrape's order). */
  series(labels: Labels): S {
    const series = this.fresh();
    this.all.push({ labels, series });
    return series;
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: Value[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() };
  }

  protected abstract fresh(): S;
  protected abstract values(): Value[];
}

/**
 * A counter family whose series are plain objects the caller resolves once and keeps, so an
 * increment is an addition: prom-client hashes and validates the label object on every `inc`
 * (eight times per usage record). The registry reads it through `get()` at scrape time, in the
 * shape prom-client's own Counter gives, so /metrics reads the same.
 */
export class SeriesCounter extends SeriesFamily<CounterSeries> {
  readonly type = "counter";

  protected fresh(): CounterSeries {
    return { value: 0 };
  }

  protected values(): Value[] {
    return this.all.map((s) => ({ labels: { ...s.labels }, value: s.series.value }));
  }

  reset(): void {
    for (const s of this.all) s.series.value = 0;
  }
}

/** A histogram family like SeriesCounter: buckets counted per series, cumulated at scrape time. */
export class SeriesHistogram extends SeriesFamily<HistogramSeries> {
  readonly type = "histogram";

  constructor(
    name: string,
    help: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    super(name, help, registry);
  }

  protected fresh(): HistogramSeries {
    return { buckets: this.bounds.map(() => 0), sum: 0, count: 0 };
  }

  /** `times`: observations of one value at once (a refusal summary's `count`). */
  observe(s: HistogramSeries, value: number, times = 1): void {
    if (!Number.isFinite(value)) return;
    s.sum += value * times;
    s.count += times;
    const bounds = this.bounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= bounds[i]!) {
        s.buckets[i]! += times;
        return;
      }
    }
  }

  /** prom-client's layout: each series' cumulative buckets (le first), +Inf, _sum, _count. */
  protected values(): Value[] {
    const values: Value[] = [];
    const bucket = `${this.name}_bucket`;
    for (const { labels, series } of this.all) {
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += series.buckets[i]!;
        values.push({ labels: { le, ...labels }, value: acc, metricName: bucket });
      });
      values.push({ labels: { le: "+Inf", ...labels }, value: series.count, metricName: bucket });
      values.push({ labels: { ...labels }, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { ...labels }, value: series.count, metricName: `${this.name}_count` });
    }
    return values;
  }

  reset(): void {
    for (const { series } of this.all) {
      series.buckets.fill(0);
      series.sum = series.count = 0;
    }
  }
}
