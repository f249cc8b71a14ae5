// Reads a JSON array of objects of one kind on stdin; prints {"<index>": "<error>"} for each that
// the models generated from the projects' own Go types reject, and exits 0.
//   node validate.mjs [Service|PrometheusRule]     (default: Knative's Service)
import { Service } from "@kubernetes-models/knative/serving.knative.dev/v1/Service";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const kinds = { Service, PrometheusRule };
const Kind = kinds[process.argv[2] || "Service"];
if (!Kind) throw new Error(`unknown kind ${process.argv[2]}`);

let input = "";
for await (const chunk of process.stdin) input += chunk;
const errors = {};
JSON.parse(input).forEach((object, index) => {
  try {
    new Kind(object).validate();
  } catch (error) {
    errors[index] = String(error.message || error);
  }
});
process.stdout.write(JSON.stringify(errors));
