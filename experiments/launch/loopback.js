// Keep the NNI manager's dashboard and REST API on the loopback address. A Node preload, loaded into NNI's own
// node process through NODE_OPTIONS (experiments/secure.py sets it up; nothing of NNI is patched on disk):
//
//     NODE_OPTIONS="--require /path/to/experiments/loopback.js" nnictl create --config nni_configs/fmnist.yml
//
// NNI 3.0 serves the dashboard, the REST API (read, change the search space, add trials, delete the experiment),
// the tuner's channel and, for remote trials, the trial channels on one port, on every interface and with no
// authentication. With this preload, in the NNI manager only (main.js of nni_node; any other node program is left
// alone):
//   - the REST/dashboard port listens on 127.0.0.1 only (reach it from elsewhere through an SSH tunnel), and answers
//     403 to a request whose Host is not a loopback name (a web page that rebinds its DNS name to 127.0.0.1);
//   - if CNNSEARCH_NNI_TRIAL_IP is an address of this machine (nniManagerIp: where remote workers reach it), the same
//     port also listens there, but only for the remote trials' WebSocket channels (`/platform/...`): every other
//     request on that address gets 403, the dashboard and the tuner channel included;
//   - the legacy trial-report server on port + 1 (Kubernetes training services) listens on that address too, or on
//     127.0.0.1 when none is given; any other listener on a wildcard address goes to 127.0.0.1;
//   - `/netron/...` (NNI proxies it to https://netron.app; offline the failed lookup throws in http-proxy and kills
//     the manager, leaving its tuner and trials behind) is answered 403 without fetching anything.
// Each decision is written to stderr (the experiment's log/nnictl_stderr.log).
'use strict';

const http = require('http');
const net = require('net');
const path = require('path');

const script = process.argv[1] || '';
const isManager = path.basename(script) === 'main.js' && path.basename(path.dirname(script)) === 'nni_node';

function argument(name) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
}

function note(message) {
    process.stderr.write(`cnnsearch loopback.js: ${message}\n`);
}

const WILDCARD = new Set([undefined, null, '', '0.0.0.0', '::', '::0']);
const LOOPBACK_HOST = /^(localhost|[^:]+\.localhost|127(\.\d{1,3}){3}|\[::1\])(:\d+)?$/i;

function isLoopbackAddress(address) {
    return net.isIPv4(address) ? address.startsWith('127.') : address === '::1';
}

// the path Express routes on (parseurl): the request target without its query, also in absolute form (http://h/p)
function pathOf(url) {
    const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^?#]*)/i.exec(url);
    return absolute ? absolute[1] || '/' : url.split(/[?#]/)[0];
}

function refuse(target, reason, isSocket) {
    const body = `${reason}\n`;
    if (isSocket) {
        target.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}` +
                   `\r\nConnection: close\r\n\r\n${body}`);
    } else {
        target.writeHead(403, { 'Content-Type': 'text/plain', Connection: 'close' });
        target.end(body);
    }
    return true;
}

if (isManager && Number(argument('port')) > 0) {
    const restPort = Number(argument('port'));
    const prefix = (argument('url-prefix') || '').replace(/^\/+|\/+$/g, '');
    const root = (prefix ? `/${prefix}` : '').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const netron = new RegExp(`^${root}/netron(/|$)`, 'i');     // Express routes ignore case
    // NNI 3.0's remote channels: /platform/remote/<worker index>
    const trialChannel = new RegExp(`^${root}/platform/[\\w-]+(/[\\w-]+)?/?$`);
    const trialIp = (process.env.CNNSEARCH_NNI_TRIAL_IP || '').trim();
    const trialDoor = trialIp && !isLoopbackAddress(trialIp) ? trialIp : '';
    const dashboard = `http://127.0.0.1:${restPort}/${prefix}`;

    // the REST server: only loopback Host names, and no /netron/ proxying
    function guard(server) {
        const emit = server.emit;
        server.emit = function (event, req, resOrSocket) {
            if (event === 'request' || event === 'upgrade') {
                const url = req.url || '';
                const host = req.headers.host;
                if (netron.test(pathOf(url))) {
                    note(`refused ${req.method} ${url}: it would make the manager fetch https://netron.app`);
                    return refuse(resOrSocket, 'cnnsearch: /netron/ is blocked (it makes the NNI manager fetch ' +
                                  'https://netron.app; offline, the failure crashes the manager)', event === 'upgrade');
                }
                if (host !== undefined && !LOOPBACK_HOST.test(host)) {
                    note(`refused ${req.method} ${url}: Host ${host} is not a loopback name`);
                    return refuse(resOrSocket, `cnnsearch: Host ${host} is not a loopback name; open ${dashboard}`,
                                  event === 'upgrade');
                }
            }
            return emit.apply(this, arguments);
        };
        return emit;
    }

    // nniManagerIp: the remote trials' WebSocket channels and nothing else, handed to the REST server's handlers
    function openTrialDoor(server, emit) {
        const door = http.createServer((req, res) => {
            note(`refused ${req.method} ${req.url} from ${req.socket.remoteAddress} on ${trialDoor}`);
            refuse(res, `cnnsearch: ${trialDoor}:${restPort} only takes remote trials' connections; the ` +
                   `dashboard is on 127.0.0.1:${restPort} (from elsewhere: ssh -N -L ${restPort}:127.0.0.1:` +
                   `${restPort} this-host)`);
        });
        door.on('upgrade', (req, socket, head) => {
            if (trialChannel.test(req.url || '')) {
                note(`trial channel ${req.url} from ${req.socket.remoteAddress} on ${trialDoor}`);
                emit.call(server, 'upgrade', req, socket, head);
            } else {
                note(`refused WebSocket ${req.url} from ${req.socket.remoteAddress} on ${trialDoor}`);
                refuse(socket, 'cnnsearch: only remote trial channels are served on this address', true);
            }
        });
        door.on('error', error => {
            error.message = `cnnsearch: cannot listen for remote trials on ${trialDoor}:${restPort} ` +
                            `(CNNSEARCH_NNI_TRIAL_IP, nniManagerIp): ${error.message}`;
            server.emit('error', error);
        });
        server.on('close', () => door.close());
        listen.call(door, { port: restPort, host: trialDoor }, () => {
            note(`remote trial channels (/platform/... only) on ${trialDoor}:${restPort}`);
        });
    }

    function hostFor(port, server) {
        if (port === restPort && server instanceof http.Server) {
            const emit = guard(server);
            if (trialDoor) {
                server.once('listening', () => openTrialDoor(server, emit));
            }
            note(`dashboard and REST API on 127.0.0.1:${restPort} only`);
            return '127.0.0.1';
        }
        if (port === restPort + 1 && trialDoor) {
            note(`trial-report server on ${trialDoor}:${port}`);
            return trialDoor;
        }
        note(`port ${port} on 127.0.0.1 only`);
        return '127.0.0.1';
    }

    const listen = net.Server.prototype.listen;
    net.Server.prototype.listen = function (...args) {
        const callback = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
        let options = args.length === 0 ? { port: 0 } : undefined;
        if (args[0] !== null && typeof args[0] === 'object' && Object.getPrototypeOf(args[0]) === Object.prototype) {
            options = { ...args[0] };
        } else if (typeof args[0] === 'number' || /^\d+$/.test(String(args[0] ?? ''))) {
            options = { port: Number(args[0]) };
            if (typeof args[1] === 'string') {
                options.host = args[1];
                if (typeof args[2] === 'number') options.backlog = args[2];
            } else if (typeof args[1] === 'number') {
                options.backlog = args[1];
            }
        }
        if (options === undefined || options.path !== undefined || options.fd !== undefined ||
            options.handle !== undefined || !WILDCARD.has(options.host) || options.port === undefined) {
            // a Unix socket, a handle, or an explicit address: as asked
            return listen.apply(this, callback ? [...args, callback] : args);
        }
        options.host = hostFor(Number(options.port), this);
        return callback ? listen.call(this, options, callback) : listen.call(this, options);
    };
}
