// Runs `tender check-network` on its own, for manual checks:
//   node --import tsx cli/check-network-main.ts aws --from test/fixtures/network/aws-example1 …
import { checkNetworkCommand } from './check-network.js';

const code = await checkNetworkCommand(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  cwd: process.cwd(),
  env: process.env,
});
process.exitCode = code;
