import closeWithGrace from 'close-with-grace';
import { pino } from 'pino';
import { buildApp } from './app.js';
import { loadConfig } from './config.js';
import { ensureDatabase, migrate } from './store/database.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  console.error(`Invalid configuration: ${(err as Error).message}`);
  process.exit(1);
}
const log = pino({ level: config.LOG_LEVEL });

try {
  await ensureDatabase(config.DATABASE_URL);
  await migrate(config.DATABASE_URL, log);
} catch (err) {
  log.fatal({ err }, 'cannot prepare the PostgreSQL database (is DATABASE_URL right and the server up?)');
  process.exit(1);
}

const app = await buildApp(config);
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'shutting down after an error');
  else app.log.info({ signal }, 'shutting down: finishing in-flight requests');
  await app.close();
});
await app.listen({ host: config.HOST, port: config.PORT });
