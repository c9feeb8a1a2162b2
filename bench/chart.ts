/** The results chart: throughput and p99 latency per design and scenario, rendered to SVG headless (vega-lite → vega). */
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface ChartRow {
  scenario: string;
  design: string;
  throughput: number;
  p99: number;
}

const designOrder = ['durable', 'durable-no-outbox', 'durable-unbounded', 'durable-cluster', 'pg-only', 'redis-only', 'external'];
const colors = ['#2f6fb0', '#5e4fa2', '#9bbbe0', '#e08a2c', '#d1495b', '#7a9e3b', '#888888'];

function panel(field: 'throughput' | 'p99', title: string, axisTitle: string, scale: Record<string, unknown>, format: string, baseline: number, designs: string[]) {
  return {
    title,
    width: 360,
    height: 240,
    encoding: {
      x: { field: 'scenario', type: 'nominal' as const, title: null, sort: null, axis: { labelAngle: 0 } },
      xOffset: { field: 'design', type: 'nominal' as const, sort: designs },
      y: { field, type: 'quantitative' as const, title: axisTitle, scale },
      color: {
        field: 'design',
        type: 'nominal' as const,
        sort: designs,
        scale: { domain: designs, range: designs.map((d) => colors[designOrder.indexOf(d)] ?? '#888888') },
      },
    },
    layer: [
      // A log scale has no zero: the bars start at an explicit baseline.
      { mark: { type: 'bar' as const }, encoding: { y2: { datum: baseline } } },
      {
        mark: { type: 'text' as const, dy: -4, fontSize: 8, baseline: 'bottom' as const },
        encoding: { text: { field, type: 'quantitative' as const, format } },
      },
    ],
  };
}

export async function renderChart(rows: ChartRow[], subtitle: string[]): Promise<string> {
  const designs = designOrder.filter((d) => rows.some((r) => r.design === d));
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: {
      text: 'Inventory Reservation Service: throughput and p99 latency by design (medians of passes; flash: until sold out)',
      subtitle,
      anchor: 'start',
    },
    data: { values: rows },
    hconcat: [
      panel('throughput', 'requests/s (higher is better)', 'req/s', {}, ',.0f', 0, designs),
      panel('p99', 'p99 latency, log scale (lower is better)', 'p99, ms', { type: 'log', domainMin: 1 }, '.1f', 1, designs),
    ],
    config: { font: 'sans-serif', legend: { orient: 'bottom', title: null }, concat: { spacing: 50 } },
  } as unknown as TopLevelSpec;
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}
