import type { World } from './case.js';
import type { Wire } from './wire.js';

/**
 * The state the fuzzer aims at: a few stocked items (identifiers using the whole alphabet, several locations) and a
 * few pending reservations with a day's TTL, so defects hit real ids. Fixed, so a replay meets the same world
 * (only the reservation ids, which the service makes, differ).
 */
export const CREDENTIALS = { client: 'fuzz-client-secret-0123456789', operator: 'fuzz-operator-secret-0123456789' };
export const API_KEYS = `fuzzclient:${CREDENTIALS.client}:client,fuzzoperator:${CREDENTIALS.operator}:operator`;

const STOCK: [string, [string, number][]][] = [
  ['fz-sku-0', [['default', 100]]],
  ['fz-sku-1', [['default', 40], ['wh-a', 60]]],
  ['fz.sku:2', [['wh-a', 500], ['wh-b', 7]]],
  ['fz_sku-3', [['default', 1000], ['wh-c', 3]]],
];

interface SeedLine {
  itemId: string;
  location?: string;
  quantity: number;
}

const RESERVATIONS: { lines: SeedLine[]; reference?: string; metadata?: Record<string, string> }[] = [
  { lines: [{ itemId: 'fz-sku-0', quantity: 2 }] },
  {
    lines: [{ itemId: 'fz-sku-1', quantity: 1 }, { itemId: 'fz.sku:2', location: 'wh-a', quantity: 3 }],
    reference: 'order-1',
    metadata: { channel: 'web', note: 'ünïcødé \u202e 😀' },
  },
  { lines: [{ itemId: 'fz_sku-3', quantity: 5 }], reference: 'order-2' },
  { lines: [{ itemId: 'fz-sku-1', location: 'wh-a', quantity: 1 }] },
];

export async function callJson(
  wire: Wire,
  method: string,
  target: string,
  secret: string,
  body?: unknown,
  headers: [string, string][] = [],
): Promise<{ status: number; json: unknown; text: string }> {
  const answer = await wire.send({
    method,
    target,
    headers: [['Authorization', `Bearer ${secret}`], ...(body === undefined ? [] : [['Content-Type', 'application/json'] as [string, string]]), ...headers],
    ...(body === undefined ? {} : { body: Buffer.from(JSON.stringify(body)) }),
  });
  if (answer.kind !== 'response') throw new Error(`${method} ${target}: ${answer.kind}`);
  const text = answer.body.toString('utf8');
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON; callers look at `text`
  }
  return { status: answer.status, json, text };
}

export async function seedWorld(wire: Wire): Promise<World> {
  const held = new Map<string, number>();
  for (const [itemId, locations] of STOCK) {
    for (const [location, quantity] of locations) {
      const res = await callJson(wire, 'PUT', `/items/${itemId}/stock`, CREDENTIALS.operator, { quantity, location });
      if (res.status !== 200) throw new Error(`seeding stock ${itemId}@${location}: ${res.status} ${res.text}`);
    }
  }
  const reservations: World['reservations'] = [];
  for (const [i, r] of RESERVATIONS.entries()) {
    const key = `fz-seed-${i}`;
    const res = await callJson(wire, 'POST', '/reservations', CREDENTIALS.client, { ...r, ttlSeconds: 86_400 }, [['Idempotency-Key', key]]);
    if (res.status !== 201) throw new Error(`seeding reservation ${i}: ${res.status} ${res.text}`);
    reservations.push({ id: (res.json as { id: string }).id, key, reference: r.reference ?? null });
    for (const l of r.lines) {
      const k = `${l.itemId}@${l.location ?? 'default'}`;
      held.set(k, (held.get(k) ?? 0) + l.quantity);
    }
  }
  return {
    items: STOCK.map(([id, locations]) => ({
      id,
      locations: locations.map(([name, onHand]) => ({ name, onHand, available: onHand - (held.get(`${id}@${name}`) ?? 0) })),
    })),
    reservations,
    credentials: CREDENTIALS,
  };
}
