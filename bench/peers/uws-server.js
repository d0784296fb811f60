// uws-server.js — the chorus benchmark endpoints on uWebSockets.js (the native
// addon shipped in the npm package `uwebsockets`), for bench/run.sh.
//
//   node uws-server.js PORT
//
// Listens on 127.0.0.1:PORT only. Same endpoints as ws-server.js; pub/sub uses
// uWS's own topic tree (ws.subscribe / app.publish), its native fast path.
// Compression off; backpressure limit raised so no subscriber is skipped.
'use strict';
const uWS = require('uwebsockets');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node uws-server.js PORT');
  process.exit(2);
}

const common = {
  compression: uWS.DISABLED,
  maxPayloadLength: 16 << 20,
  maxBackpressure: 64 << 20,
  closeOnBackpressureLimit: false,
  idleTimeout: 0,
  // Keep the query's channel in the socket's user data.
  upgrade: (res, req, context) => {
    res.upgrade(
      { channel: req.getQuery('channel') || '' },
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
};

const app = uWS.App();
app.ws('/echo', { ...common, message: (ws, msg, isBinary) => { ws.send(msg, isBinary); } });
app.ws('/bench/sub', { ...common, open: (ws) => { ws.subscribe(ws.getUserData().channel); } });
app.ws('/bench/pub', {
  ...common,
  message: (ws, msg, isBinary) => { app.publish(ws.getUserData().channel, msg, isBinary); },
});
app.get('/health', (res) => { res.end('ok\n'); });
app.any('/*', (res) => { res.writeStatus('404 Not Found').end(); });

app.listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws-server: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`uws-server listening on 127.0.0.1:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
