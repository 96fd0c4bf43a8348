// Runs kvhubd's /dashboard script once against a live shard, as a browser would, and
// prints what it put into the page as JSON: {element id: {innerHTML, textContent}}.
// Usage: node dashboard_render.js http://127.0.0.1:PORT
// The page's script only uses document.getElementById (innerHTML / textContent), fetch,
// performance.now and setInterval; this gives it those and nothing else.
'use strict';
const vm = require('vm');

async function main() {
  const base = process.argv[2];
  if (!base) throw new Error('usage: dashboard_render.js http://HOST:PORT');
  const html = await (await fetch(base + '/dashboard')).text();
  const m = html.match(/<script>([\s\S]*)<\/script>/);
  if (!m) throw new Error('no <script> in /dashboard');
  const elements = {};
  const document = {
    getElementById(id) {
      if (!elements[id]) elements[id] = {innerHTML: '', textContent: ''};
      return elements[id];
    },
  };
  const context = vm.createContext({
    document,
    fetch: (path) => fetch(base + path),
    performance: {now: () => Date.now()},
    setInterval: () => 0,  // one tick is enough
    console,
  });
  vm.runInContext(m[1], context);
  await context.tick();  // the page ran tick() once already; this call is awaited to its end
  process.stdout.write(JSON.stringify(elements) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + '\n');
  process.exit(1);
});
