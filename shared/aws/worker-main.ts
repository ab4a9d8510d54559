// Entry point of the AWS worker bundle (see build-worker-bundle.ts).
import { main } from './worker-agent.js';

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`tender-aws-worker: ${e?.stack ?? e}\n`);
    process.exit(1);
  },
);
