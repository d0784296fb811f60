// ws-server.js — the chorus benchmark endpoints on Node's `ws` (npm), for bench/run.sh.
//
//   node ws-server.js PORT
//
// Listens on 127.0.0.1:PORT only.
//   GET /health               200 "ok"
//   /echo                     WebSocket: every message sent back unchanged (same opcode)
//   /bench/sub?channel=C      WebSocket: receives every message published to C
//   /bench/pub?channel=C      WebSocket: every message is broadcast to C's subscribers
// No compression (permessage-deflate off), as on every server in the comparison.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node ws-server.js PORT');
  process.exit(2);
}

const channels = new Map(); // channel name -> Set of subscriber sockets

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 << 20 });

server.on('upgrade', (req, socket, head) => {
  const u = new URL(req.url, 'http://localhost');
  if (u.pathname !== '/echo' && u.pathname !== '/bench/sub' && u.pathname !== '/bench/pub') {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const channel = u.searchParams.get('channel') || '';
    ws.on('error', () => {});
    if (u.pathname === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    } else if (u.pathname === '/bench/sub') {
      let set = channels.get(channel);
      if (!set) channels.set(channel, (set = new Set()));
      set.add(ws);
      ws.on('close', () => {
        set.delete(ws);
        if (set.size === 0 && channels.get(channel) === set) channels.delete(channel);
      });
    } else {
      ws.on('message', (data, isBinary) => {
        const set = channels.get(channel);
        if (!set) return;
        for (const s of set) if (s.readyState === 1) s.send(data, { binary: isBinary });
      });
    }
  });
});

server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  console.error(`ws-server listening on 127.0.0.1:${port}`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
