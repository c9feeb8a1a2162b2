import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../../src/events/types.js';
import { Api, expectInvalidFields, expectProblem, outcome, startHttpApp, type Answer } from '../helpers/api.js';
import { newItem, type TestApp } from '../helpers/app.js';
import { appendEvents, ENVELOPE_MEMBERS, expectDocumented } from '../helpers/events.js';
import { waitFor } from '../helpers/wait.js';

// GET /events (the pull feed, operator scope) and GET /asyncapi.json (public), as a consumer meets them.

const CLIENT = 'client-secret-0123456789';
const OPERATOR = 'operator-secret-0123456789';
const SOURCE = 'https://shop.example/inventory';

let t: TestApp;
let api: Api;
beforeAll(async () => {
  t = await startHttpApp({ API_KEYS: `shop:${CLIENT}:client,ops:${OPERATOR}:operator`, EVENTS_SOURCE: SOURCE });
  api = Api.inject(t.app);
});
afterAll(() => t?.close());

const as = (secret: string | null): Record<string, string> => (secret === null ? {} : { authorization: `Bearer ${secret}` });
const feed = (query = '', secret: string | null = OPERATOR): Promise<Answer> =>
  api.request({ method: 'GET', url: `/events${query === '' ? '' : `?${query}`}`, headers: as(secret) });

interface Page {
  items: { id: string; subject: string; sequence: string; type: string; data: unknown }[];
  nextCursor: string;
}
const pageOf = (a: Answer): Page => {
  expect({ status: a.status, body: a.text }).toMatchObject({ status: 200 });
  return a.body as Page;
};

/** Appends `n` events of a new subject straight into the outbox (the feed does not care who appended them), sealed. */
async function appendThenSeal(n: number): Promise<string> {
  const subject = newItem('feed');
  await appendEvents(t.app.runtime.db, Array.from({ length: n }, () => ({ subject, type: 'inventory.stock.changed' })), { sealed: false });
  // A round of the sealer job may be under way, having looked before the insert: until none is left unsealed.
  await waitFor('the events sealed', async () => {
    await t.app.runtime.eventSealer.runOnce();
    const { rows } = await t.app.runtime.db.query<{ n: number }>('SELECT count(*)::int AS n FROM unsealed_events');
    return rows[0]!.n === 0 ? true : undefined;
  });
  return subject;
}

describe('GET /events', () => {
  it('answers an empty feed with no items and the start as its cursor', async () => {
    expect(pageOf(await feed())).toEqual({ items: [], nextCursor: '0' });
    expect(pageOf(await feed('after=0'))).toEqual({ items: [], nextCursor: '0' });
  });

  it('is for operators: 401 without a key, 403 with a client key', async () => {
    expectProblem(await feed('', null), 'unauthorized');
    expectProblem(await feed('', CLIENT), 'forbidden');
    expect(outcome(await feed('', OPERATOR))).toBe('200');
  });

  it('serves committed changes as CloudEvents 1.0 envelopes, once sealed (within EVENTS_SEAL_INTERVAL_MS)', async () => {
    const item = newItem();
    const put = await api.request({ method: 'PUT', url: `/items/${item}/stock`, headers: as(OPERATOR), payload: { quantity: 7 } });
    expect(outcome(put)).toBe('200');
    // The sealer job, not a test's call, makes it visible.
    const event = await waitFor('the stock change in the feed', async () =>
      pageOf(await feed('limit=1000')).items.find((e) => e.subject === item),
    );
    expect(Object.keys(event)).toEqual(ENVELOPE_MEMBERS);
    expect(event).toMatchObject({
      specversion: '1.0',
      source: SOURCE,
      type: 'inventory.stock.changed',
      subject: item,
      datacontenttype: 'application/json',
      sequence: '1',
      data: { itemId: item, location: 'default', onHand: 7, reserved: 0, safetyStock: 0, available: 7, availableHighPriority: 7 },
    });
    expect((event as unknown as { time: string }).time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expectDocumented(event);
  });

  it('pages with nextCursor: every event once, in order; past the end the same cursor, to poll with', async () => {
    const start = pageOf(await feed('limit=1000')).nextCursor;
    const subject = await appendThenSeal(23);
    const read: Page['items'] = [];
    let cursor = start;
    for (;;) {
      const page = pageOf(await feed(`after=${cursor}&limit=5`));
      expect(page.items.length).toBeLessThanOrEqual(5);
      read.push(...page.items);
      if (page.items.length === 0) {
        expect(page.nextCursor).toBe(cursor);
        break;
      }
      expect(page.nextCursor).not.toBe(cursor);
      cursor = page.nextCursor;
    }
    expect(read.map((e) => [e.subject, e.sequence])).toEqual(Array.from({ length: 23 }, (_, i) => [subject, String(i + 1)]));
    expect(new Set(read.map((e) => e.id)).size).toBe(23);
    // Events appended later come after that cursor.
    const later = await appendThenSeal(2);
    expect(pageOf(await feed(`after=${cursor}`)).items.map((e) => e.subject)).toEqual([later, later]);
  });

  it('answers 100 events by default, up to `limit` (at most 1000)', async () => {
    const start = pageOf(await feed('limit=1000')).nextCursor;
    await appendThenSeal(1001);
    expect(pageOf(await feed(`after=${start}`)).items).toHaveLength(100);
    expect(pageOf(await feed(`after=${start}&limit=1`)).items).toHaveLength(1);
    expect(pageOf(await feed(`after=${start}&limit=1000`)).items).toHaveLength(1000);
  });

  it('refuses a limit out of range, a cursor it did not issue, and unknown parameters: 400 naming each', async () => {
    for (const limit of ['0', '1001', '-1', '1.5', 'ten', '']) expectInvalidFields(await feed(`limit=${limit}`), 'limit');
    for (const after of ['-1', '01', 'abc', '1e3', '12345678901234567', '']) expectInvalidFields(await feed(`after=${after}`), 'after');
    expectInvalidFields(await feed('cursor=5'), 'cursor');
    expectInvalidFields(await feed('after=1&after=2'), 'after');
  });
});

describe('GET /asyncapi.json', () => {
  it('is open, also when API keys are configured', async () => {
    expect(outcome(await api.request({ method: 'GET', url: '/asyncapi.json' }))).toBe('200');
  });

  it('is an AsyncAPI 3.0 document of every event type, on every transport, whose references all resolve', async () => {
    const doc = (await api.request({ method: 'GET', url: '/asyncapi.json' })).body as {
      asyncapi: string;
      info: { title: string; version: string };
      channels: Record<string, { address: string | null; messages: Record<string, unknown> }>;
      operations: Record<string, { action: string; channel: { $ref: string }; messages: { $ref: string }[] }>;
      components: { schemas: Record<string, unknown>; messages: Record<string, { name: string; payload: { properties: { type: { const: string } } } }> };
    };
    expect(doc.asyncapi).toBe('3.0.0');
    expect(doc.info.title && doc.info.version).toBeTruthy();
    const resolve = (ref: string): unknown => {
      expect(ref.startsWith('#/')).toBe(true);
      const target = ref
        .slice(2)
        .split('/')
        .reduce<unknown>((at, key) => (at as Record<string, unknown> | undefined)?.[key.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
      expect(target, ref).toBeDefined();
      return target;
    };
    // Every reference anywhere in it names something in it.
    const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
    for (const ref of refs) resolve(JSON.parse(`{${ref}}`).$ref);
    // One message per type, its payload the envelope with that type.
    const messages = Object.values(doc.components.messages);
    expect(messages.map((m) => m.name).sort()).toEqual(EVENT_TYPES.map((e) => e.type).sort());
    for (const m of messages) expect(m.payload.properties.type.const).toBe(m.name);
    // NATS: a channel per type at the subject that is the type; Kafka and webhooks: one channel of every type.
    const natsAddresses = Object.values(doc.channels).map((c) => c.address).filter((a) => a?.startsWith('inventory.'));
    expect(natsAddresses.sort()).toEqual(EVENT_TYPES.map((e) => e.type).sort());
    expect(Object.keys(doc.channels.kafka!.messages)).toHaveLength(EVENT_TYPES.length);
    expect(Object.keys(doc.channels.webhook!.messages)).toHaveLength(EVENT_TYPES.length);
    // Each operation sends on a channel, and its messages are that channel's.
    for (const [name, op] of Object.entries(doc.operations)) {
      expect(op.action, name).toBe('send');
      for (const m of op.messages) expect(m.$ref.startsWith(`${op.channel.$ref}/messages/`), `${name}: ${m.$ref}`).toBe(true);
    }
  });
});
