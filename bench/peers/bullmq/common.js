'use strict';
// Shared configuration of the BullMQ peer (bench/compare.py sets these through the environment).

const Redis = require('ioredis');

function env(name, fallback) {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
}

function intEnv(name, fallback) {
  const raw = env(name, String(fallback));
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0) {
    console.error(`${name}: expected a non-negative integer, got ${JSON.stringify(raw)}`);
    process.exit(2);
  }
  return value;
}

const config = {
  redisUrl: env('PEER_REDIS_URL', 'redis://127.0.0.1:6379/0'),
  queue: env('PEER_QUEUE', 'checks'),
  results: env('PEER_RESULTS_STREAM', 'peer:results'),
  monitors: intEnv('PEER_MONITORS', 100),
  intervalMs: intEnv('PEER_INTERVAL_MS', 10000),
  timeoutMs: intEnv('PEER_TIMEOUT_MS', 5000),
  targetUrl: env('PEER_TARGET_URL', 'http://127.0.0.1:18080/'),
  // Where each monitor's slots fall inside the interval (see scheduler.js): crc32 (Vigil's
  // phases), even, or none (BullMQ's default for `every`: the upsert time, so all at once).
  phases: env('PEER_PHASES', 'crc32'),
  concurrency: intEnv('PEER_CONCURRENCY', 512),
  workerId: env('PEER_WORKER_ID', `worker-${process.pid}`),
  bodyCap: intEnv('PEER_BODY_CAP', 64 * 1024),
};

function connection() {
  // BullMQ Workers need maxRetriesPerRequest: null (blocking commands).
  return new Redis(config.redisUrl, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

function monitorId(i) {
  return `bench-${String(i).padStart(6, '0')}`;
}

function onStop(stop) {
  // SIGTERM (bench/compare.py) or Ctrl-C: the process's own orderly stop.
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

function run(main) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

module.exports = { config, connection, monitorId, onStop, run };
