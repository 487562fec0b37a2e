// The peer in upload_vs_tus_server.py: @tus/server with @tus/file-store, default options.
// usage: node tus_server.mjs PORT DIR   (prints "listening" once it accepts connections)
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const http = server.listen({ host: '127.0.0.1', port: Number(port) }, () => {
  console.log('listening');
});
process.on('SIGTERM', () => http.close(() => process.exit(0)));
