import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RECORD_BATCH } from '../../src/store/batch-statement.js';
import { createPool, migrate } from '../../src/store/database.js';
import { createTestDatabase, type TestDatabase } from '../helpers/postgres.js';

/**
 * The writer's connections plan the batch statement once (a generic plan, src/store/database.ts). The worst moment
 * to plan is on a new database, with every table empty: the plan made then must still reach each row through an
 * index, or every batch would scan the tables whole once they have grown.
 */

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'CTE Name'?: string;
  Plans?: PlanNode[];
}

const nodesOf = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodesOf)];
const PARAMETERS = Math.max(...[...RECORD_BATCH.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])));

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
  await migrate(database.url, pino({ level: 'silent' }));
});
afterAll(() => database?.drop());

/** The generic plan of the batch statement on a session of `pool`, made while every table is empty. */
async function genericPlanOn(pool: pg.Pool): Promise<{ nodes: PlanNode[]; jit: boolean }> {
  const client = await pool.connect();
  try {
    await client.query('SET plan_cache_mode = force_generic_plan');
    await client.query(`PREPARE batch AS ${RECORD_BATCH}`);
    const { rows } = await client.query<{ 'QUERY PLAN': { Plan: PlanNode; JIT?: unknown }[] }>(
      `EXPLAIN (FORMAT JSON) EXECUTE batch(${Array(PARAMETERS).fill('NULL').join(', ')})`,
    );
    const plan = rows[0]!['QUERY PLAN'][0]!;
    return { nodes: nodesOf(plan.Plan), jit: plan.JIT !== undefined };
  } finally {
    client.release(true);
  }
}

/** The tables a plan scans whole, and the hash joins it builds (over a table it would have to read whole). */
const wholeReads = (nodes: PlanNode[]) =>
  nodes.flatMap((n) =>
    n['Node Type'] === 'Seq Scan' && n['Relation Name'] !== 'state_generation' // one row, by design
      ? [`Seq Scan on ${n['Relation Name']}`]
      : n['Node Type'] === 'Hash Join'
        ? ['Hash Join']
        : [],
  );

/** The generic plan of the batch statement on a fresh pool of `groupCommit` sessions (the writer's, or ordinary ones). */
async function genericPlan(groupCommit: boolean): Promise<{ nodes: PlanNode[]; jit: boolean }> {
  const pool = createPool(database.url, { max: 1, queryTimeoutMs: 10_000, groupCommit });
  try {
    return await genericPlanOn(pool);
  } finally {
    await pool.end();
  }
}

/** A plan's nested loops with a direct child over one of `ctes`: over a batch's own rows, each is quadratic in them. */
const loopsOver = (nodes: PlanNode[], ctes: (children: Set<string | undefined>) => boolean) =>
  nodes.filter((n) => n['Node Type'] === 'Nested Loop' && ctes(new Set((n.Plans ?? []).map((child) => child['CTE Name']))));

describe("the batch statement's plan on the writer's connections", () => {
  it('made on empty tables, reaches every row through an index (no table scanned whole, none hashed), and is not JIT-compiled', async () => {
    const { nodes, jit } = await genericPlan(true);
    expect(nodes.some((n) => n['Relation Name'] === 'reservations')).toBe(true);
    expect(wholeReads(nodes)).toEqual([]);
    // The scan of state_generation it must keep costs 10^10: JIT would compile the statement (2 s) every batch.
    expect(jit).toBe(false);
  });

  it("pairs each stock row with its batch's deltas without a nested loop over both (quadratic in a batch's locations)", async () => {
    const { nodes } = await genericPlan(true);
    expect(loopsOver(nodes, (ctes) => ctes.has('stocked') && ctes.has('deltas'))).toEqual([]);
  });

  it("gates a batch's new reservations, their lines and their events without a nested loop over its own rows (quadratic in its reservations)", async () => {
    const { nodes } = await genericPlan(true);
    expect(loopsOver(nodes, (ctes) => ctes.has('idem') || ctes.has('created'))).toEqual([]);
  });

  it('the check sees it: planned as any other session would, the same plan scans the empty tables', async () => {
    expect(wholeReads((await genericPlan(false)).nodes)).not.toEqual([]);
  });
});
