import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Runtime } from '../../app.js';
import { reconcile } from '../../jobs/reconcile.js';

const Figures = Type.Object({ onHand: Type.Integer(), reserved: Type.Integer(), holds: Type.Integer() });
const RedisFigures = Type.Object({ onHand: Type.Integer(), reserved: Type.Integer(), pending: Type.Integer() });
const DriftRow = Type.Object({ itemId: Type.String(), location: Type.String(), redis: Figures, postgres: Figures });
const Report = Type.Object({
  checkedItems: Type.Integer(),
  strandedIntents: Type.Array(
    Type.Object({
      itemId: Type.String(),
      opId: Type.String(),
      location: Type.String(),
      delta: Type.Integer(),
      kind: Type.Union([Type.Literal('supply'), Type.Literal('debit')]),
      ageMs: Type.Integer(),
      nodeId: Type.String(),
      ownerAlive: Type.Boolean(),
      ledger: Type.Union([Type.Literal('recorded'), Type.Literal('void'), Type.Literal('none')]),
      action: Type.Union([Type.Literal('finish'), Type.Literal('take_back')]),
    }),
  ),
  drift: Type.Array(DriftRow),
  orphanHolds: Type.Array(
    Type.Object({ itemId: Type.String(), field: Type.String(), reservationId: Type.String(), ageMs: Type.Integer() }),
  ),
  repair: Type.Union([
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
          postgres: Type.Object({ onHand: Type.Integer(), reserved: Type.Integer() }),
          inFlight: Type.Object({ confirms: Type.Integer(), debits: Type.Integer(), supply: Type.Integer() }),
          intentsEnded: Type.Integer(),
          holdsSettled: Type.Integer(),
          holdsReadded: Type.Integer(),
        }),
      ),
      unhealed: Type.Array(DriftRow),
      rebuilt: Type.Boolean(),
    }),
    Type.Null(),
  ]),
});

/** Operator endpoints; the same code as `npm run reconcile`. */
export const adminRoutes: FastifyPluginAsyncTypebox<{ runtime: Runtime }> = async (app, { runtime }) => {
  const run = (repair: boolean) =>
    reconcile(runtime.reconcileDeps, {
      heal: repair,
      dropOrphans: repair,
      rebuildOnDrift: repair,
      orphanAfterMs: runtime.config.ORPHAN_HOLD_AFTER_MS,
      settleMs: 1000,
    });

  app.get(
    '/admin/reconciliation',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['operations'],
        summary: 'Compare Redis with PostgreSQL per item and location, and list stranded stock intents (dry run)',
        response: { 200: Report },
      },
    },
    () => run(false),
  );

  app.post(
    '/admin/reconciliation',
    {
      config: { access: 'operator' },
      schema: {
        tags: ['operations'],
        summary:
          'Compare, then repair from PostgreSQL: end stranded stock intents, drop orphaned holds, correct drift in place, ' +
          'and rebuild Redis only if drift remains',
        body: Type.Optional(Type.Object({ repair: Type.Boolean({ default: true }) }, { additionalProperties: false })),
        response: { 200: Report },
      },
    },
    (request) => run(request.body?.repair ?? true),
  );
};
