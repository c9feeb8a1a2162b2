import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { reconcile, type ReconcileDeps } from '../../jobs/reconcile.js';
import { documented, problems } from '../openapi.js';

const Figures = Type.Object({ onHand: Type.Integer(), reserved: Type.Integer(), holds: Type.Integer(), safetyStock: Type.Integer() });
const RedisFigures = Type.Object({
  onHand: Type.Integer(),
  reserved: Type.Integer(),
  pending: Type.Integer({ description: 'On-hand supply decided, not yet recorded (not available)' }),
  safety: Type.Integer({ description: 'Safety stock enforced' }),
  safetyPending: Type.Integer({ description: 'Safety stock decreases decided, not yet recorded (still enforced)' }),
});
const DriftRow = Type.Object({ itemId: Type.String(), location: Type.String(), redis: Figures, postgres: Figures });
const Report = Type.Object({
  checkedItems: Type.Integer({ description: 'Items compared (from PostgreSQL and Redis, never a keyspace scan)' }),
  strandedIntents: Type.Array(
    Type.Object({
      itemId: Type.String(),
      opId: Type.String(),
      location: Type.String(),
      delta: Type.Integer(),
      safetyDelta: Type.Integer({ description: 'The safety stock change it decided (0: none)' }),
      kind: Type.Union([Type.Literal('supply'), Type.Literal('debit')]),
      ageMs: Type.Integer(),
      nodeId: Type.String(),
      ownerAlive: Type.Boolean(),
      ledger: Type.Union([Type.Literal('recorded'), Type.Literal('void'), Type.Literal('none')]),
      action: Type.Union([Type.Literal('finish'), Type.Literal('take_back')]),
    }),
    { description: 'Stock changes decided in Redis whose node died before they were settled, and what the ledger says of each' },
  ),
  drift: Type.Array(DriftRow, { description: 'Each (item, location) whose figures differ across two looks a second apart' }),
  orphanHolds: Type.Array(
    Type.Object({ itemId: Type.String(), field: Type.String(), reservationId: Type.String(), ageMs: Type.Integer() }),
    { description: 'Holds Redis granted that PostgreSQL never recorded (their request died in between)' },
  ),
  repair: Type.Union(
    [
      Type.Object({
        intentsFinished: Type.Integer(),
        intentsTakenBack: Type.Integer(),
        orphansDropped: Type.Integer(),
        corrected: Type.Array(
          Type.Object({
            itemId: Type.String(),
            location: Type.String(),
            before: RedisFigures,
            after: RedisFigures,
            postgres: Type.Object({ onHand: Type.Integer(), reserved: Type.Integer(), safetyStock: Type.Integer() }),
            inFlight: Type.Object({
              confirms: Type.Integer(),
              debits: Type.Integer(),
              supply: Type.Integer(),
              safetyIncreases: Type.Integer(),
              safetyDecreases: Type.Integer(),
            }),
            intentsEnded: Type.Integer(),
            holdsSettled: Type.Integer(),
            holdsReadded: Type.Integer(),
          }),
        ),
        unhealed: Type.Array(DriftRow),
        rebuilt: Type.Boolean(),
      }),
      Type.Null(),
    ],
    { description: 'What the repair did; null for a dry run' },
  ),
});

const clean = { checkedItems: 1250, strandedIntents: [], drift: [], orphanHolds: [], repair: null };
const drifted = {
  checkedItems: 1250,
  strandedIntents: [],
  drift: [
    {
      itemId: 'sku-tshirt-m',
      location: 'default',
      redis: { onHand: 100, reserved: 9, holds: 4, safetyStock: 0 },
      postgres: { onHand: 100, reserved: 7, holds: 3, safetyStock: 0 },
    },
  ],
  orphanHolds: [{ itemId: 'sku-tshirt-m', field: '01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10:default', reservationId: '01a217ba-1200-7c1e-9a4f-5d2b8e3c6a10', ageMs: 42_000 }],
  repair: null,
};

/** Operator endpoints; the same code as `npm run reconcile`. */
export const adminRoutes: FastifyPluginAsyncTypebox<{ reconcileDeps: ReconcileDeps; orphanAfterMs: number }> = async (
  app,
  { reconcileDeps, orphanAfterMs },
) => {
  const run = (repair: boolean) =>
    reconcile(reconcileDeps, {
      heal: repair,
      dropOrphans: repair,
      rebuildOnDrift: repair,
      orphanAfterMs,
      settleMs: 1000,
    });

  app.get(
    '/admin/reconciliation',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'getReconciliation',
        tags: ['operations'],
        summary: 'Compare Redis with PostgreSQL per item and location, and list stranded stock intents (dry run)',
        description: 'The same report as `npm run reconcile`; changes nothing.',
        response: {
          200: documented('The differences found (none: Redis agrees with PostgreSQL)', Report, {
            clean: { summary: 'Redis agrees with PostgreSQL', value: clean },
            drift: { summary: 'An orphaned hold left by a process that died', value: drifted },
          }),
        },
      },
    },
    () => run(false),
  );

  app.post(
    '/admin/reconciliation',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'repairReconciliation',
        tags: ['operations'],
        summary:
          'Compare, then repair from PostgreSQL: end stranded stock intents, drop orphaned holds, correct drift in place, ' +
          'and rebuild Redis only if drift remains',
        description:
          'The same as `npm run reconcile -- --repair`. Only drift a correction cannot fix (a Redis of another ' +
          'generation) leads to a rebuild, during which mutations and availability reads answer 503. No body, or ' +
          '`{"repair": false}` for a dry run.',
        body: Type.Optional(Type.Object({ repair: Type.Boolean({ default: true }) }, { additionalProperties: false })),
        bodyExamples: { repair: { summary: 'Repair (the default)', value: { repair: true } } },
        response: {
          200: documented('The differences found, and what the repair did', Report, {
            repaired: {
              summary: 'The orphaned hold dropped; no rebuild needed',
              value: {
                ...drifted,
                repair: { intentsFinished: 0, intentsTakenBack: 0, orphansDropped: 1, corrected: [], unhealed: [], rebuilt: false },
              },
            },
          }),
          ...problems({
            validation_failed: {
              means: 'The body is not `{"repair": true|false}`.',
              example: { detail: 'repair: must be true or false', errors: [{ field: 'repair', message: 'must be true or false' }] },
            },
          }),
        },
      },
    },
    (request) => run(request.body?.repair ?? true),
  );
};
