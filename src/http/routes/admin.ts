import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { reconcile, type ReconcileDeps } from '../../jobs/reconcile.js';

const Figures = Type.Object({ onHand: Type.Integer(), reserved: Type.Integer(), holds: Type.Integer() });
const Report = Type.Object({
  checkedItems: Type.Integer(),
  drift: Type.Array(Type.Object({ itemId: Type.String(), location: Type.String(), redis: Figures, postgres: Figures })),
  orphanHolds: Type.Array(
    Type.Object({ itemId: Type.String(), field: Type.String(), reservationId: Type.String(), ageMs: Type.Integer() }),
  ),
  repair: Type.Union([Type.Object({ orphansDropped: Type.Integer(), rebuilt: Type.Boolean() }), Type.Null()]),
});

/** Operator endpoints; the same code as `npm run reconcile`. */
export const adminRoutes: FastifyPluginAsyncTypebox<{ reconcileDeps: ReconcileDeps; orphanAfterMs: number }> = async (
  app,
  { reconcileDeps, orphanAfterMs },
) => {
  const run = (repair: boolean) =>
    reconcile(reconcileDeps, {
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
        tags: ['operations'],
        summary: 'Compare Redis with PostgreSQL per item and location (dry run)',
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
        summary: 'Compare, then repair from PostgreSQL: drop orphaned holds, rebuild Redis if drift remains',
        body: Type.Optional(Type.Object({ repair: Type.Boolean({ default: true }) }, { additionalProperties: false })),
        response: { 200: Report },
      },
    },
    (request) => run(request.body?.repair ?? true),
  );
};
