import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { addressOf, loadConfig, parseClusterNodes } from '../../src/config.js';
import { parseApiKeys } from '../../src/credentials.js';
import { childOnFirstLog, logOptions, maskCredentials } from '../../src/log.js';

const SECRET = 's3cretPW-0123456789';

/** loadConfig's error message for `env`, or fails the test when it accepts it. */
function refusal(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(Object.keys(env))}`);
}

describe('connection URLs (refused at start, named, password masked)', () => {
  const cases: [variable: string, value: string, says: RegExp][] = [
    ['DATABASE_URL', `postgres://u:${SECRET}@[bad/x`, /DATABASE_URL is not a valid URL \(got postgres:\/\/u:\*\*\*@\[bad\/x\)/],
    ['DATABASE_URL', `http://u:${SECRET}@db.example/inventory`, /DATABASE_URL must start with postgres:\/\/ or postgresql:\/\//],
    ['DATABASE_URL', `mysql://u:${SECRET}@db.example/inventory`, /DATABASE_URL must start with postgres:\/\//],
    ['DATABASE_URL', `postgres://u:${SECRET}@db.example:5432`, /DATABASE_URL names no database/],
    ['DATABASE_URL', `postgres://u:${SECRET}@db.example/`, /DATABASE_URL names no database/],
    ['DATABASE_URL', `postgres:///inventory?password=${SECRET}`, /DATABASE_URL names no host/],
    ['DATABASE_URL', 'not-a-url', /DATABASE_URL is not a valid URL/],
    ['DATABASE_REPLICA_URL', `postgres://u:${SECRET}@[bad/x`, /DATABASE_REPLICA_URL is not a valid URL \(got postgres:\/\/u:\*\*\*@\[bad\/x\)/],
    ['DATABASE_REPLICA_URL', `redis://u:${SECRET}@replica.example/inventory`, /DATABASE_REPLICA_URL must start with postgres:\/\/ or postgresql:\/\//],
    ['DATABASE_REPLICA_URL', `postgres://u:${SECRET}@replica.example`, /DATABASE_REPLICA_URL names no database/],
    ['DATABASE_REPLICA_URL', `postgres:///inventory?password=${SECRET}`, /DATABASE_REPLICA_URL names no host/],
    ['REDIS_URL', 'not-a-url', /REDIS_URL is not a valid URL \(got not-a-url\)/],
    ['REDIS_URL', `http://:${SECRET}@cache.example:6379`, /REDIS_URL must start with redis:\/\/ or rediss:\/\/ \(got http:\/\/:\*\*\*@cache\.example:6379\)/],
    ['REDIS_URL', `redis://:${SECRET}@[bad`, /REDIS_URL is not a valid URL \(got redis:\/\/:\*\*\*@\[bad\)/],
    ['REDIS_URL', 'redis://', /REDIS_URL names no host/],
    ['REDIS_URL', `redis://default:${SECRET}@/0`, /REDIS_URL (names no host|is not a valid URL)/],
    ['REDIS_CLUSTER_NODES', 'redis-1', /REDIS_CLUSTER_NODES must be host:port or redis\[s\]:\/\/\[user:password@\]host:port entries separated by commas \(got "redis-1"\)/],
    ['REDIS_CLUSTER_NODES', 'redis-1:6379,redis-2:70000', /REDIS_CLUSTER_NODES must be host:port .*"redis-2:70000"/],
    ['REDIS_CLUSTER_NODES', `redis://:${SECRET}@redis-1`, /REDIS_CLUSTER_NODES must be host:port .*\(got "redis:\/\/:\*\*\*@redis-1"\)/],
    ['REDIS_CLUSTER_NODES', `redis://:${SECRET}@redis-1:6379/2`, /REDIS_CLUSTER_NODES must be host:port/],
    ['REDIS_CLUSTER_NODES', `redis://a:${SECRET}@redis-1:6379,redis://b:${SECRET}@redis-2:6379`, /URL entries differ in credentials or TLS/],
    ['REDIS_CLUSTER_NODES', `rediss://a:${SECRET}@redis-1:6379,redis://a:${SECRET}@redis-2:6379`, /URL entries differ in credentials or TLS/],
    ['REDIS_READ_FROM', 'replica', /REDIS_READ_FROM=replica needs REDIS_CLUSTER_NODES/],
    ['REDIS_READ_FROM', 'nearest', /REDIS_READ_FROM/],
  ];
  for (const [variable, value, says] of cases) {
    it(`refuses ${variable}=${maskCredentials(value)}`, () => {
      const message = refusal({ [variable]: value });
      expect(message).toMatch(says);
      expect(message).not.toContain(SECRET);
    });
  }

  it('reports every bad variable at once, schema errors included', () => {
    const message = refusal({ PORT: 'abc', REDIS_URL: `http://:${SECRET}@h`, DATABASE_URL: `postgres://u:${SECRET}@h` });
    expect(message).toMatch(/PORT/);
    expect(message).toMatch(/REDIS_URL/);
    expect(message).toMatch(/DATABASE_URL/);
    expect(message).not.toContain(SECRET);
  });

  it('accepts the defaults and every documented form', () => {
    expect(() => loadConfig({})).not.toThrow();
    for (const env of [
      { DATABASE_URL: `postgresql://u:${SECRET}@db.example:6543/inventory?sslmode=require` },
      { DATABASE_URL: 'postgres:///inventory?host=/var/run/postgresql' },
      { DATABASE_REPLICA_URL: `postgresql://u:${SECRET}@replica.example:6543/inventory?sslmode=require` },
      { DATABASE_REPLICA_URL: 'postgres:///inventory?host=/var/run/postgresql' },
      { REDIS_URL: `rediss://default:${SECRET}@cache.example:6380/2` },
      { REDIS_URL: 'redis://[::1]:6379' },
      { REDIS_CLUSTER_NODES: 'redis-1:6379, redis-2:6379,10.0.0.3:7000,[::1]:7001' },
      { REDIS_CLUSTER_NODES: 'redis-1:6379', REDIS_READ_FROM: 'replica' },
      { REDIS_CLUSTER_NODES: `redis://irs:${SECRET}@redis-1:6379,redis-2:6379,redis://irs:${SECRET}@[::1]:7001` },
    ]) {
      expect(() => loadConfig(env), JSON.stringify(env)).not.toThrow();
    }
  });

  it("reads REDIS_CLUSTER_NODES' seed nodes, and the credentials and TLS its URL entries name for every node", () => {
    expect(parseClusterNodes(`redis://irs:p%40ss@redis-1:6379, redis-2:6380`)).toEqual({
      nodes: [
        { host: 'redis-1', port: 6379 },
        { host: 'redis-2', port: 6380 },
      ],
      nodeOptions: { username: 'irs', password: 'p@ss' },
      problems: [],
    });
    expect(parseClusterNodes('redis://:secret@[::1]:7000').nodeOptions).toEqual({ password: 'secret' });
    expect(parseClusterNodes('rediss://redis-1:6379,redis-2:6379').nodeOptions).toEqual({ tls: {} });
    expect(parseClusterNodes('redis-1:6379')).toEqual({ nodes: [{ host: 'redis-1', port: 6379 }], nodeOptions: {}, problems: [] });
  });

  it('leaves the read replica off unless DATABASE_REPLICA_URL is set, and bounds its lag at 1 s by default, 100 ms at least', () => {
    expect(loadConfig({})).toMatchObject({ DATABASE_REPLICA_URL: '', DATABASE_REPLICA_MAX_LAG_MS: 1000 });
    expect(loadConfig({ DATABASE_REPLICA_MAX_LAG_MS: '100' }).DATABASE_REPLICA_MAX_LAG_MS).toBe(100);
    expect(refusal({ DATABASE_REPLICA_MAX_LAG_MS: '99' })).toMatch(/DATABASE_REPLICA_MAX_LAG_MS must be >= 100/);
    expect(refusal({ DATABASE_REPLICA_MAX_LAG_MS: '1s' })).toMatch(/DATABASE_REPLICA_MAX_LAG_MS must be integer/);
  });

  it('reads the environment it is given, and nothing else', () => {
    const saved = process.env.RATE_LIMIT_MAX;
    process.env.RATE_LIMIT_MAX = '5';
    try {
      expect(loadConfig({}).RATE_LIMIT_MAX).toBe(0);
      expect(loadConfig({ RATE_LIMIT_MAX: '7' }).RATE_LIMIT_MAX).toBe(7);
      expect(loadConfig().RATE_LIMIT_MAX).toBe(5);
    } finally {
      if (saved === undefined) delete process.env.RATE_LIMIT_MAX;
      else process.env.RATE_LIMIT_MAX = saved;
    }
  });

  it('names a dependency by host and port (and database), never its credentials', () => {
    expect(addressOf(`redis://:${SECRET}@cache.example:6380`)).toBe('cache.example:6380');
    expect(addressOf('rediss://cache.example')).toBe('cache.example:6379');
    expect(addressOf(`postgres://u:${SECRET}@db.example/inventory`)).toBe('db.example:5432/inventory');
    expect(addressOf(`postgresql://u:${SECRET}@replica.example:6543/inventory`)).toBe('replica.example:6543/inventory');
    expect(addressOf('postgres:///inventory?host=/var/run/postgresql')).toBe('/var/run/postgresql:5432/inventory');
  });
});

describe('log redaction (the logger configuration server.ts and Fastify share)', () => {
  function capture(): { log: pino.Logger; text: () => string } {
    const lines: string[] = [];
    const log = pino(logOptions('trace'), { write: (line: string) => void lines.push(line) });
    return { log, text: () => lines.join('') };
  }
  const urlError = (value: string): Error => {
    try {
      new URL(value);
    } catch (err) {
      return err as Error;
    }
    throw new Error('parsed');
  };

  it('masks credentials in an error: its input, message, stack and causes', () => {
    const { log, text } = capture();
    const invalid = urlError(`postgres://u:${SECRET}@[bad/x`);
    expect((invalid as Error & { input: string }).input).toContain(SECRET); // what Node puts there
    log.fatal({ err: invalid }, 'cannot prepare the PostgreSQL database');
    log.error(new Error(`cannot connect to redis://:${SECRET}@cache.example:6379`, { cause: urlError(`redis://:${SECRET}@[x`) }));
    log.error({ err: new AggregateError([new Error(`postgres://u:${SECRET}@h/db refused`)], 'all failed') }, 'x');
    expect(text()).not.toContain(SECRET);
    expect(text()).toContain('redis://:***@cache.example:6379');
  });

  it('blanks secrets in the places they sit: headers, passwords, configuration, free text', () => {
    const { log, text } = capture();
    log.info({ req: { headers: { authorization: `Bearer ${SECRET}` } } }, 'request');
    log.info({ headers: { authorization: `bearer ${SECRET}` } }, 'headers');
    log.info({ config: { DATABASE_URL: `postgres://u:${SECRET}@h/db`, DATABASE_REPLICA_URL: `postgres://u:${SECRET}@r/db`, REDIS_URL: `redis://:${SECRET}@h`, API_KEYS: `a:${SECRET}:client` } }, 'config');
    log.info({ API_KEYS: `a:${SECRET}:client`, password: SECRET, db: { password: SECRET } }, 'top level');
    log.info(`connecting to postgres://u:${SECRET}@h/db`);
    log.info('connecting to %s', `redis://:${SECRET}@h:6379`);
    expect(text()).not.toContain(SECRET);
    expect(text()).toContain('[Redacted]');
  });

  it("a request's logger is made on its first line, and writes what the request's own child would", () => {
    const { log, text } = capture();
    let made = 0;
    const child = log.child.bind(log);
    log.child = ((...args: Parameters<typeof log.child>) => (made++, child(...args))) as typeof log.child;
    const requestLog = childOnFirstLog(log, { reqId: 'req-1' }, {});
    expect(requestLog.level).toBe('trace');
    expect(made).toBe(0); // a request that logs nothing makes no child
    requestLog.warn({ password: SECRET, statusCode: 503 }, 'request failed');
    requestLog.error(new Error(`cannot connect to redis://:${SECRET}@cache.example:6379`));
    expect(made).toBe(1);
    const lines = text().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.reqId, l.level, l.msg])).toEqual([
      ['req-1', 40, 'request failed'],
      ['req-1', 50, 'cannot connect to redis://:***@cache.example:6379'],
    ]);
    expect(lines[0]).toMatchObject({ password: '[Redacted]', statusCode: 503 });
    expect(text()).not.toContain(SECRET);
  });

  it('masks only credentials: user names, hosts and file URLs stay readable', () => {
    expect(maskCredentials(`postgres://u:${SECRET}@db.example:5432/inventory`)).toBe('postgres://u:***@db.example:5432/inventory');
    expect(maskCredentials(`x postgres://u:pa/${SECRET}@host/db y`)).toBe('x postgres://u:***@host/db y');
    expect(maskCredentials(`postgres://h/db?sslmode=require&password=${SECRET}&x=1`)).toBe('postgres://h/db?sslmode=require&password=***&x=1');
    expect(maskCredentials('postgres://u@h/db')).toBe('postgres://u@h/db');
    const frame = 'at x (file:///app/node_modules/@fastify/x/index.js:10:5)';
    expect(maskCredentials(frame)).toBe(frame);
  });
});

describe('API_KEYS (refused at start, entries named by position or name, never by secret)', () => {
  const S1 = 'first-secret-0123456789';
  const S2 = 'second-secret-0123456789';

  it('accepts name:secret:role[:tenant], a key without a tenant being in the default tenant', () => {
    const env = { API_KEYS: `shop-a:${S1}:client:shop-a,ops:${S2}:operator,` };
    expect(() => loadConfig(env)).not.toThrow();
    expect(parseApiKeys(env.API_KEYS)).toEqual({
      keys: [
        { name: 'shop-a', secret: S1, role: 'client', tenant: 'shop-a' },
        { name: 'ops', secret: S2, role: 'operator', tenant: 'default' },
      ],
      problems: [],
    });
  });

  const cases: [label: string, value: string, says: RegExp][] = [
    ['a repeated name', `checkout:${S1}:client,checkout:${S2}:operator`, /API_KEYS: the name "checkout" is used by more than one key \(entries 1, 2\)/],
    ['one secret under two names', `checkout:${S1}:client,ops:${S1}:operator`, /API_KEYS: the keys "checkout", "ops" \(entries 1, 2\) have the same secret/],
    ['a secret with a colon', `checkout:${S1.slice(0, 8)}:${S1.slice(8)}:client`, /API_KEYS entry 1: the secret must be 16 or more visible ASCII characters, none of them ':' or ','/],
    ['a secret with a comma', `checkout:${S1.slice(0, 8)},${S1.slice(8)}:client`, /API_KEYS entry 1: expected name:secret:role\[:tenant\]/],
    ['a short secret', `checkout:short:client`, /API_KEYS entry 1: the secret must be 16 or more/],
    ['a secret with a space', `checkout:${S1} x:client`, /API_KEYS entry 1: the secret must be/],
    ['an unknown role', `checkout:${S1}:admin`, /API_KEYS entry 1: the role must be client or operator/],
    ['a bad name', `check/out:${S1}:client`, /API_KEYS entry 1: the name must be/],
    ['a tenant too long', `checkout:${S1}:client:${'t'.repeat(65)}`, /API_KEYS entry 1: the tenant must be 1 to 64/],
    ['a tenant with a slash', `checkout:${S1}:client:shop/a`, /API_KEYS entry 1: the tenant must be/],
    ['an empty tenant', `checkout:${S1}:client:`, /API_KEYS entry 1: the tenant must be/],
    ['too many parts', `checkout:${S1}:client:shop-a:extra`, /API_KEYS entry 1: expected name:secret:role\[:tenant\]/],
    ['a secret alone', S1, /API_KEYS entry 1: expected/],
    ['a bad second entry', `checkout:${S1}:client,ops:${S2}`, /API_KEYS entry 2: expected/],
  ];
  for (const [label, value, says] of cases) {
    it(`refuses ${label}`, () => {
      const message = refusal({ API_KEYS: value });
      expect(message).toMatch(says);
      for (const secret of [S1, S2, S1.slice(0, 8), S1.slice(8), S2.slice(0, 8)]) expect(message).not.toContain(secret);
    });
  }
});
