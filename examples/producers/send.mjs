// Send one signed command to campaign-fsm from Node.js, with built-in modules only (docs/signing.md).
//
//   BOOTSTRAP=127.0.0.1:9092 TOPIC=campaign.commands KEY_ID=ops-1 SECRET='a-shared-secret-of-32-characters' \
//   CAMPAIGN=campaign-0001 ACTION=start node send.mjs
//
// Optional: COMMAND_ID (default crypto.randomUUID()), REQUESTED_BY, PRIORITY, KCAT (default "kcat").
// Prints the command id; its results carry that commandId, as sent.
//
// The signature is computed here with node:crypto. Node has no Kafka client built in, so the record
// is handed to kcat; in a Node service, give the same key, value bytes and headers to your client
// (kafkajs' default partitioner is the Java client's murmur2, which the service expects).
import { createHmac, randomUUID } from "node:crypto";
import { spawnSync } from "node:child_process";
import { userInfo } from "node:os";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") {
    console.error(`error: ${name} is not set`);
    process.exit(2);
  }
  return value;
};

const keyId = env("KEY_ID");
const secret = env("SECRET");
const campaign = env("CAMPAIGN");
const command = {
  id: env("COMMAND_ID", randomUUID()),
  campaignId: campaign,
  action: env("ACTION"),
  priority: env("PRIORITY", "STANDARD"),
  requestedBy: env("REQUESTED_BY", userInfo().username),
  issuedAt: new Date().toISOString(), // milliseconds and Z: signed as is, accepted as is
};

// The value is serialised once; these bytes are what is signed and what is produced.
const value = Buffer.from(JSON.stringify(command), "utf8");
const signature = createHmac("sha256", Buffer.from(secret, "utf8"))
  .update(Buffer.concat([Buffer.from(`${keyId}\n${campaign}\n`, "utf8"), value]))
  .digest("hex");

const kcat = spawnSync(env("KCAT", "kcat"), [
  "-P", "-b", env("BOOTSTRAP"), "-t", env("TOPIC"), "-k", campaign,
  "-X", "topic.partitioner=murmur2_random",
  "-H", `cfsm-key-id=${keyId}`, "-H", `cfsm-signature=${signature}`, "-H", "content-type=application/json",
], { input: value, stdio: ["pipe", "inherit", "inherit"] });
if (kcat.error || kcat.status !== 0) {
  console.error(`error: kcat failed: ${kcat.error ?? `exit status ${kcat.status}`}`);
  process.exit(2);
}
console.log(command.id);
