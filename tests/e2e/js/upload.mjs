// Upload one file to Sluice with tus-js-client (Node), print the upload URL on stdout.
// usage: node upload.mjs ENDPOINT KEY FILE
import * as tus from 'tus-js-client';
import fs from 'node:fs';
import path from 'node:path';

const [endpoint, key, file] = process.argv.slice(2);
const size = fs.statSync(file).size;
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  uploadSize: size,
  chunkSize: 512 * 1024,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: `Bearer ${key}` },
  metadata: { filename: path.basename(file), filetype: 'video/mp4' },
  onError: (err) => { console.error(`upload failed: ${err}`); process.exit(1); },
  onSuccess: () => { console.log(upload.url); },
});
upload.start();
