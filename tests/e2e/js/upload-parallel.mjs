// Upload one file to Sluice with tus-js-client (Node) using `parallelUploads` (the tus
// concatenation extension: N partial uploads, then one final), or with a deferred length.
// Prints the final upload URL on stdout.
// usage: node upload-parallel.mjs ENDPOINT KEY FILE [PARTS|defer]
import * as tus from 'tus-js-client';
import fs from 'node:fs';
import path from 'node:path';

const [endpoint, key, file, mode = '3'] = process.argv.slice(2);
const defer = mode === 'defer';
const options = {
  endpoint,
  retryDelays: [0, 500, 1000],
  headers: { Authorization: `Bearer ${key}` },
  metadata: { filename: path.basename(file), filetype: 'video/mp4' },
  onError: (err) => { console.error(`upload failed: ${err}`); process.exit(1); },
  onSuccess: () => { console.log(upload.url); },
};
let source;
if (defer) {
  // The length is declared by the last PATCH. (A Buffer, not a stream: tus-js-client
  // 4.3.1's Node stream source waits forever for data after a stream's last chunk.)
  source = fs.readFileSync(file);
  Object.assign(options, { uploadLengthDeferred: true, chunkSize: 256 * 1024 });
} else {
  source = fs.readFileSync(file);
  Object.assign(options, { parallelUploads: Number(mode) });
}
const upload = new tus.Upload(source, options);
upload.start();
