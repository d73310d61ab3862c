import { ConfigError } from "../../../src/config";
import { kubernetesGpuCount } from "../../../src/executors/executor-command";

describe("--gpus with --runtime kubernetes", () => {
  it("means no GPU slots for auto and none, and a cap for a count", () => {
    expect(kubernetesGpuCount("auto")).toBe(0);
    expect(kubernetesGpuCount("none")).toBe(0);
    expect(kubernetesGpuCount("8")).toBe(8);
  });

  it("refuses device indices: the cluster, not this machine, picks the cards", () => {
    expect(() => kubernetesGpuCount("0,1")).toThrow(ConfigError);
    expect(() => kubernetesGpuCount("0,1")).toThrow(/--gpus: with --runtime kubernetes, expected none or a count N/);
  });
});
