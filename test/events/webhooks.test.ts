import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { EventDelivery } from '../../src/events/delivery.js';
import type { CloudEvent } from '../../src/events/envelope.js';
import { parseTransports, webhookName } from '../../src/events/settings.js';
import { WEBHOOK_DEFAULTS, WebhookTransport } from '../../src/events/transports/webhook.js';
import { createMetrics } from '../../src/metrics.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { appendEvents } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';
import { closeReceivers, receiver } from './receiver.js';
import {
  cursorOf,
  interleaved,
  orderViolations,
  silentLog,
  startAtEnd,
  useRelays,
} from './support.js';

// Webhooks end to end: the relays POSTing to a real HTTP receiver the test runs, which verifies every signature
// with the Standard Webhooks reference implementation and answers as each test says.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

const env = useRelays(closeReceivers);

const webhook = (url: string, secret = SECRET) =>
  new WebhookTransport({ url, name: webhookName(url), origin: new URL(url).origin }, secret, { timeoutMs: 2_000, concurrency: 4 });

describe('webhooks', () => {
  it('POSTs each event as its CloudEvent JSON, signed so a Standard Webhooks verifier accepts it', async () => {
    const target = await receiver();
    const url = target.url.replace('http://', 'http://relay:pa%3Ass@');
    await startAtEnd(env.database.db, webhookName(url));
    const appended = await appendEvents(env.database.db, interleaved(20, 4, Math.random, 'signed'));
    const relay = env.relays.relay(webhook(url));
    relay.start();
    await waitFor('every event', async () => (target.accepted().length >= appended.length ? true : undefined));
    await relay.stop();

    const verifier = new Webhook(SECRET);
    const impostor = new Webhook(`whsec_${randomBytes(32).toString('base64')}`);
    for (const { headers, body } of target.requests) {
      const signed = { 'webhook-id': headers['webhook-id'] as string, 'webhook-timestamp': headers['webhook-timestamp'] as string, 'webhook-signature': headers['webhook-signature'] as string };
      const event = verifier.verify(body, signed) as CloudEvent;
      expect(signed['webhook-id']).toBe(event.id);
      expect(signed['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
      expect(Math.abs(Number(signed['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(300);
      expect(() => impostor.verify(body, signed)).toThrow(/signature/i);
      expect(() => verifier.verify(body.replace('"1.0"', '"1.1"'), signed)).toThrow(/signature/i);
      expect(headers['content-type']).toBe('application/json');
      expect(headers.authorization).toBe(`Basic ${Buffer.from('relay:pa:ss').toString('base64')}`);
      expect(event).toMatchObject({ specversion: '1.0', source: '/test', datacontenttype: 'application/json' });
    }
    expect(target.accepted().map((e) => e.id).sort()).toEqual(appended.map((e) => e.id).sort());
  });

  it('an endpoint failing for a while then receives everything, in per-subject order', async () => {
    let failing = true;
    const target = await receiver((n) => (failing || n % 7 === 3 ? 503 : 204));
    await startAtEnd(env.database.db, webhookName(target.url));
    const appended = await appendEvents(env.database.db, interleaved(150, 12, Math.random, 'outage'));
    const metrics = createMetrics();
    const relay = env.relays.relay(webhook(target.url), { metrics, backoff: { baseMs: 10, capMs: 100 } });
    relay.start();
    await waitFor('retries', async () => ((await metrics.eventRetries.get()).values[0]?.value ?? 0) >= 5 ? true : undefined);
    failing = false;
    await waitFor('every event', async () => (new Set(target.accepted().map((e) => e.id)).size >= appended.length ? true : undefined), { timeoutMs: 20_000 });
    // The endpoint's last 204 may still be on its way to the relay: stopping now would abort that request, and the
    // event would rightly be sent again later (at least once). The cursor must come to cover every event first.
    const last = appended.at(-1)!.position;
    await waitFor('the cursor past every event', async () => ((await cursorOf(env.database.db, webhookName(target.url))) === last ? true : undefined));
    await relay.stop();
    expect(target.requests.some((q) => q.status === 503)).toBe(true);
    expect(orderViolations(target.accepted())).toEqual([]);
    expect(new Set(target.accepted().map((e) => e.id))).toEqual(new Set(appended.map((e) => e.id)));
    expect(await cursorOf(env.database.db, webhookName(target.url))).toBe(last);
  });

  it('a dead endpoint (never answering) does not delay another: each endpoint has its own relay', async () => {
    const dead = await receiver(() => 'hang');
    const live = await receiver();
    const { settings, problems } = parseTransports(loadConfig({ EVENTS_WEBHOOK_URLS: `${dead.url},${live.url}`, EVENTS_WEBHOOK_SECRET: SECRET }));
    expect(problems).toEqual([]);
    for (const w of settings.webhooks) await startAtEnd(env.database.db, w.name);
    const appended = await appendEvents(env.database.db, interleaved(300, 30, Math.random, 'dead'));
    // The production wiring (one relay per endpoint), on this test's database and key prefix.
    const delivery = new EventDelivery(
      { db: env.database.db, redis: env.relays.redis, keys: env.relays.keys, metrics: createMetrics(), log: silentLog, nodeId: 'aaaaaaaaaaaa' },
      settings,
      { source: '/test', retentionHours: 168 },
    );
    delivery.start();
    try {
      // All of it while the dead endpoint's first requests still wait for an answer (they time out after 10 s):
      // the live one waited for nothing.
      await waitFor('the live endpoint to have every event', async () => (live.accepted().length >= appended.length ? true : undefined), {
        timeoutMs: WEBHOOK_DEFAULTS.timeoutMs - 2_000,
      });
      expect(dead.requests.length).toBeGreaterThan(0);
      expect(dead.requests.length).toBeLessThanOrEqual(WEBHOOK_DEFAULTS.concurrency);
      expect(dead.requests.every((q) => q.status === 'hung')).toBe(true);
      expect(await cursorOf(env.database.db, webhookName(dead.url))).toBe(appended[0]!.position - 1);
      expect(orderViolations(live.accepted())).toEqual([]);
    } finally {
      await delivery.stop();
    }
  });
});

describe('two app instances', () => {
  let apps: TestApp[] = [];
  afterAll(async () => {
    for (const app of apps) await app.close();
  });

  it('relay each transport from one of them at a time: every event once; the other takes over when it stops', async () => {
    const target = await receiver();
    const overrides = {
      DATABASE_URL: env.database.url,
      REDIS_KEY_PREFIX: `t${randomBytes(4).toString('hex')}:`,
      EVENTS_WEBHOOK_URLS: target.url,
      EVENTS_WEBHOOK_SECRET: SECRET,
    };
    await startAtEnd(env.database.db, webhookName(target.url));
    apps = [await startTestApp(overrides), await startTestApp(overrides)];
    const appended = await appendEvents(env.database.db, interleaved(300, 40, Math.random, 'apps'));
    await waitFor('every event', async () => (target.accepted().length >= appended.length ? true : undefined), { timeoutMs: 15_000 });
    // Nothing failed, so nothing was sent twice: one relay was active (had two been, most events would come twice).
    expect(target.accepted().map((e) => e.id).sort()).toEqual(appended.map((e) => e.id).sort());
    const relayOf = (t: TestApp) => t.app.eventDelivery.relays[0]!;
    const active = apps.filter((t) => relayOf(t).active);
    expect(active.length).toBe(1);
    const lease = await apps[0]!.app.redis.get(`${overrides.REDIS_KEY_PREFIX}relay:${webhookName(target.url)}`);
    expect(lease).toBe(relayOf(active[0]!).lease.owner);

    await active[0]!.close();
    apps = apps.filter((t) => t !== active[0]);
    const more = await appendEvents(env.database.db, interleaved(50, 5, Math.random, 'apps-more'));
    await waitFor('the other app to take over', async () => (target.accepted().length >= appended.length + more.length ? true : undefined), { timeoutMs: 15_000 });
    expect(relayOf(apps[0]!).active).toBe(true);
    expect(target.accepted().slice(appended.length).map((e) => e.id).sort()).toEqual(more.map((e) => e.id).sort());
  });
});
