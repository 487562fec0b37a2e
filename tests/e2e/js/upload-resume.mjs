// Upload one file with tus-js-client, retrying through broken connections and a restarted
// server the way an app would; print the upload URL on stdout and each retry on stderr.
// usage: node upload-resume.mjs ENDPOINT KEY FILE [CHUNK_BYTES]
import * as tus from 'tus-js-client';
import fs from 'node:fs';
import path from 'node:path';

const [endpoint, key, file, chunk] = process.argv.slice(2);
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  uploadSize: fs.statSync(file).size,
  chunkSize: chunk ? Number(chunk) : Infinity,
  retryDelays: [0, 500, 1000, 2000, 3000, 5000, 5000, 5000],
  headers: { Authorization: `Bearer ${key}` },
  metadata: { filename: path.basename(file), filetype: 'video/mp4' },
  onShouldRetry: (err, attempt) => {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    console.error(`retry ${attempt + 1} after: ${err.message.split('\n')[0]} (status ${status})`);
    return !status || status === 409 || status === 423 || status >= 500;
  },
  onError: (err) => { console.error(`upload failed: ${err}`); process.exit(1); },
  onSuccess: () => { console.log(upload.url); },
});
upload.start();
