// The deploy guide's own commands, run literally where they can be run offline, and the guide's promises.

import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { INFRA_DIR } from '../lib/app';
import { tempDir } from './helpers';

const GUIDE = path.join(INFRA_DIR, 'README.md');
const TOP_README = path.join(INFRA_DIR, '..', 'README.md');

/** Every ```sh block of a Markdown file, in order. */
function shBlocks(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

/** The one sh block that contains `needle`. */
function blockWith(needle: string): string {
  const found = shBlocks(GUIDE).filter((b) => b.includes(needle));
  assert.equal(found.length, 1, `exactly one sh block of infra/README.md has ${needle}`);
  return found[0];
}

describe('infra/README.md: the webhook secret (defect 2)', () => {
  it('its command, run literally, writes exactly the 64 characters the user pastes into GitHub: no trailing newline', () => {
    // GitHub signs with the secret as pasted (X-Hub-Signature-256: HMAC-SHA256 of the body keyed by the
    // webhook secret, https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries),
    // and `--secret-string file://…` stores the file byte for byte, newline included
    // (https://docs.aws.amazon.com/cli/latest/userguide/cli-usage-parameters-file.html).
    const dir = tempDir('readme');
    const block = blockWith('openssl rand');
    const run = spawnSync('bash', ['-euo', 'pipefail', '-c', block], { cwd: dir, encoding: 'utf8', timeout: 10_000 });
    assert.equal(run.status, 0, run.stderr);
    const file = path.join(dir, 'webhook-secret.txt');
    const bytes = fs.readFileSync(file, 'utf8');
    assert.match(bytes, /^[0-9a-f]{64}$/, `webhook-secret.txt holds ${JSON.stringify(bytes.slice(-3))} at its end`);
  });

  it('the secret is stored from that very file, and the step that pastes it names the same file', () => {
    const create = blockWith('--name tasuki/webhook-secret');
    assert.match(create, /aws secretsmanager create-secret --name tasuki\/webhook-secret[^]*--secret-string file:\/\/webhook-secret\.txt/);
    const guide = fs.readFileSync(GUIDE, 'utf8');
    const step6 = guide.slice(guide.indexOf('## 6.'), guide.indexOf('## 7.'));
    assert.match(step6, /webhook-secret\.txt/);
  });

  it("the secret names in the guide's commands are the example config's", () => {
    const example = JSON.parse(fs.readFileSync(path.join(INFRA_DIR, 'tasuki.config.example.json'), 'utf8'));
    const commands = shBlocks(GUIDE).join('\n');
    assert.ok(commands.includes(`--name ${example.github.webhook_secret_name} `), example.github.webhook_secret_name);
    assert.ok(commands.includes(`--name ${example.github.private_key_secret_name} `), example.github.private_key_secret_name);
  });
});

describe('Limits (item 8)', () => {
  for (const file of [GUIDE, TOP_README]) {
    it(`${path.relative(path.join(INFRA_DIR, '..'), file)} has a Limits section naming disk, Docker, OS, NAT cost and quotas, with AWS sources`, () => {
      const text = fs.readFileSync(file, 'utf8');
      const start = text.indexOf('## Limits');
      assert.ok(start >= 0, 'a "## Limits" section');
      const next = text.indexOf('\n## ', start + 1);
      const section = text.slice(start, next < 0 ? undefined : next);
      for (const must of ['20 GiB', '200 GiB', 'Docker', 'Linux', '$0.045', 'S3 gateway endpoint', 'Lambda', 'vCPU', 'https://docs.aws.amazon.com/']) {
        assert.ok(section.includes(must), `the Limits section mentions ${must}`);
      }
    });
  }
});
