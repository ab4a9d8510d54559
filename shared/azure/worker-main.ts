// Entry point of the Azure worker bundle (agent.cjs): runs the agent with the
// settings the install command wrote to /opt/tender/agent.env.

import { runAzureAgentFromEnv } from './worker-agent.js';

runAzureAgentFromEnv().catch((e) => {
  process.stderr.write(`tender agent stopped: ${(e as Error)?.stack ?? e}\n`);
  process.exit(1);
});
