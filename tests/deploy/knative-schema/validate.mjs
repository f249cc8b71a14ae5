// Reads a JSON array of Knative Services on stdin; prints {"<index>": "<error>"} for each that
// @kubernetes-models/knative (generated from Knative's Go types) rejects, and exits 0.
import { Service } from "@kubernetes-models/knative/serving.knative.dev/v1/Service";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const errors = {};
JSON.parse(input).forEach((object, index) => {
  try {
    new Service(object).validate();
  } catch (error) {
    errors[index] = String(error.message || error);
  }
});
process.stdout.write(JSON.stringify(errors));
