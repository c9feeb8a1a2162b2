/**
 * The PostgreSQL and Redis the suite runs against: the service's own variables, `DATABASE_URL` and `REDIS_URL`, else
 * the local defaults (README, "Tests"). Each test file makes its own databases on DATABASE_URL's server (connecting
 * through its `postgres` database, so the role needs CREATEDB; the database DATABASE_URL names is never touched) and
 * its own key prefix on REDIS_URL's Redis. Tests that kill or cut a server start private ones instead.
 */

const LOCAL_POSTGRES = 'postgres://postgres@127.0.0.1:5432/postgres';
const LOCAL_REDIS = 'redis://127.0.0.1:6379';

/** The Redis URL every test app and test client uses. */
export function testRedisUrl(env: Record<string, string | undefined> = process.env): string {
  return env.REDIS_URL || LOCAL_REDIS;
}

/** DATABASE_URL's server and credentials, on its `postgres` database: where test databases are created and dropped. */
export function testPostgresUrl(env: Record<string, string | undefined> = process.env): string {
  const url = new URL(env.DATABASE_URL || LOCAL_POSTGRES);
  url.pathname = '/postgres';
  return url.toString();
}
