// Upload one file to Sluice with Uppy (@uppy/core + @uppy/tus, default options) in Node,
// print the upload URL on stdout. usage: node uppy-upload.mjs ENDPOINT KEY FILE
//
// Uppy is a browser library but its core and tus plugin need no DOM. The one adaptation
// for Node: tus-js-client's Node build reads a Buffer (not a Blob), and Uppy reads a file's
// size from `data.size`, so the file's bytes are handed over as a Buffer carrying `size`.
import Uppy from '@uppy/core';
import Tus from '@uppy/tus';
import fs from 'node:fs';
import path from 'node:path';

const [endpoint, key, file] = process.argv.slice(2);
const data = fs.readFileSync(file);
data.size = data.length;

const uppy = new Uppy({ autoProceed: false });
uppy.use(Tus, { endpoint, headers: { Authorization: `Bearer ${key}` } });
uppy.addFile({ name: path.basename(file), type: 'video/mp4', data, source: 'node' });
const result = await uppy.upload();
if (!result || result.failed.length > 0 || result.successful.length !== 1) {
  const err = result?.failed?.[0]?.error;
  console.error(`upload failed: ${err ?? 'no result'}`);
  process.exit(1);
}
console.log(result.successful[0].uploadURL);
