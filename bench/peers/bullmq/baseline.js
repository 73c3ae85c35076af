'use strict';
// `node baseline.js URL [N] [C]`: N GETs (default 20000), at most C at once (default 50), a
// fresh connection each (agent: false, as worker.js), no BullMQ, no Redis: the floor of the
// peer's HTTP check. Prints one JSON line {"mode", "n", "seconds", "per_s", "cpu_us"}.

const http = require('node:http');

const [url, nArg, cArg] = process.argv.slice(2);
const n = Number.parseInt(nArg || '20000', 10);
const c = Number.parseInt(cArg || '50', 10);

function get() {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function main() {
  let next = 0;
  const start = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const lane = async () => {
    while (next < n) {
      next += 1;
      await get();
    }
  };
  await Promise.all(Array.from({ length: c }, lane));
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({
    mode: 'node http.get agent:false', n, seconds: Number(seconds.toFixed(3)),
    per_s: Number((n / seconds).toFixed(1)), cpu_us: Number(((cpu.user + cpu.system) / n).toFixed(1)),
  }));
}

if (!url) {
  console.error('usage: node baseline.js URL [N] [C]');
  process.exit(2);
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
