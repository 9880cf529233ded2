// A js-libp2p peer (a client nobody in this project wrote) dials a relay over WebSocket,
// waits for identify and pings it, then prints what it learnt as one JSON line.
// Usage: node dial.mjs <multiaddr with /ws and /p2p>
import './polyfill.mjs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { webSockets } from '@libp2p/websockets'
import * as filters from '@libp2p/websockets/filters'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const target = multiaddr(process.argv[2])
const timer = setTimeout(() => {
  console.error('interop: timed out')
  process.exit(2)
}, 20000)

const node = await createLibp2p({
  transports: [webSockets({ filter: filters.all })],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() }
})
const identified = new Promise((resolve) => {
  node.addEventListener('peer:identify', (event) => resolve(event.detail))
})
await node.dial(target)
const info = await identified
const rtt = await node.services.ping.ping(target)
console.log(JSON.stringify({
  peer: info.peerId.toString(),
  agent: info.agentVersion,
  protocols: info.protocols,
  rtt
}))
clearTimeout(timer)
await node.stop()
