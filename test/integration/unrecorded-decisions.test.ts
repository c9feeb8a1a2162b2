import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Api, expectProblem, expectReleased, expectReservation, outcome, startHttpApp } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { checkInvariants } from '../helpers/invariants.js';
import { untilTime } from '../helpers/wait.js';

/**
 * A confirm or release decided in Redis by a node that died before PostgreSQL recorded it: PostgreSQL has the last
 * word (the sweeper records the expiry once the TTL and the grace passed), and every other call is answered by what
 * PostgreSQL records, never by the dead decision.
 */
describe('a decision whose record never came', () => {
  let t: TestApp;
  let api: Api;

  beforeAll(async () => {
    // No sweeper pass unless a test runs one; an unrecorded decision is taken as dead 300 ms past the TTL.
    t = await startHttpApp({ SWEEPER_INTERVAL_MS: 3_600_000, UNRECORDED_GRACE_MS: 300 });
    api = await Api.listen(t.app);
  });
  afterAll(async () => {
    await t?.close();
  });

  const pendingOf = async (reference?: string) => {
    const item = newItem('unrec');
    await api.stock(item, 10);
    const r = await api.hold({ lines: [{ itemId: item, quantity: 2 }], ttlSeconds: 1, ...(reference ? { reference } : {}) });
    return { item, r };
  };

  it('a confirm after a dead release is answered as PostgreSQL ends the reservation: expired, not released', async () => {
    const { item, r } = await pendingOf();
    const dead = await t.app.runtime.decisions.settle('release', r.id, r.lines);
    expect(dead.kind).toBe('settled');
    // While PostgreSQL still has it pending, nobody can say how it ends.
    expect(outcome(await api.confirm(r.id))).toBe('503 unavailable');
    await untilTime(Date.parse(r.expiresAt) + 400);
    await t.app.runtime.sweeper.runOnce();
    expectProblem(await api.confirm(r.id), 'reservation_expired');
    expect(expectReservation(await api.get(r.id), 200).status).toBe('expired');
    await checkInvariants(t.app, [item]);
  });

  it('a release by reference racing a dead confirm answers 200 with that reservation as it ended', async () => {
    const reference = `unrec-${Date.now()}`;
    const a = await pendingOf(reference);
    const b = await pendingOf(reference);
    const dead = await t.app.runtime.decisions.settle('confirm', a.r.id, a.r.lines);
    expect(dead.kind).toBe('settled');
    await untilTime(Date.parse(b.r.expiresAt) + 400);
    // The sweeper records the expiry while the release by reference waits on the dead confirm's record.
    const answer = api.releaseByReference({ reference });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await t.app.runtime.sweeper.runOnce();
    const { items } = expectReleased(await answer);
    expect(items.map((d) => [d.id, d.status]).sort()).toEqual([[a.r.id, 'expired'], [b.r.id, 'expired']].sort());
    await checkInvariants(t.app, [a.item, b.item]);
  });
});
