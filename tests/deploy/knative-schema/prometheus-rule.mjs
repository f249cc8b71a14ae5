// Reads a JSON array of PrometheusRules on stdin; prints {"<index>": "<error>"} for each that
// @kubernetes-models/prometheus-operator (generated from the operator's CRDs) rejects; exits 0.
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const errors = {};
JSON.parse(input).forEach((object, index) => {
  try {
    new PrometheusRule(object).validate();
  } catch (error) {
    errors[index] = String(error.message || error);
  }
});
process.stdout.write(JSON.stringify(errors));
