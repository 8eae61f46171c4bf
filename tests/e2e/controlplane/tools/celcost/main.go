// celcost compiles the variables of a generated ValidatingAdmissionPolicy with the
// API server's own CEL environment and cost model (k8s.io/apiserver/pkg/cel), and
// prints, for each variable, its estimated cost (object and oldObject are dyn, as
// in a ValidatingAdmissionPolicy) and its actual cost on one old/new pod pair.
//
//	celcost POLICY.json OLD.json NEW.json
//
// Its own module (go.mod beside it, the CEL of k8s.io/apiserver v0.34.4), apart from
// the control plane's, which pins the oldest Kubernetes the project supports; built by
// hand:
//
//	cd tests/e2e/controlplane/tools/celcost && go build -o /tmp/celcost .
//
// Output: one JSON object {"perCallLimit", "runtimeBudget", "variables": [{"name",
// "estimatedMax", "actual", "result"}]}. Its figures are in docs/benchmarks.md.
package main

import (
	"fmt"
	"math"
	"os"

	"github.com/google/cel-go/cel"
	"k8s.io/apimachinery/pkg/util/json"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/apiserver/pkg/cel/library"
)

type variable struct {
	Name         string `json:"name"`
	EstimatedMax uint64 `json:"estimatedMax"`
	Actual       uint64 `json:"actual"`
	Result       string `json:"result"`
}

func load(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		fail(err)
	}
	out := map[string]interface{}{}
	if err := json.Unmarshal(data, &out); err != nil {
		fail(err)
	}
	return out
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "celcost:", err)
	os.Exit(2)
}

func main() {
	if len(os.Args) != 4 {
		fail(fmt.Errorf("usage: celcost POLICY.json OLD.json NEW.json"))
	}
	policy := load(os.Args[1])
	// Earlier variables' values, as the API server gives them to later ones
	// (the positions variant's variables.digits).
	earlier := map[string]interface{}{}
	activation := map[string]interface{}{
		"oldObject": load(os.Args[2]), "object": load(os.Args[3]), "variables": earlier,
	}
	envSet := environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion(), true)
	base, err := envSet.Env(environment.StoredExpressions)
	if err != nil {
		fail(err)
	}
	env, err := base.Extend(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("variables", cel.MapType(cel.StringType, cel.DynType)),
	)
	if err != nil {
		fail(err)
	}
	spec := policy["spec"].(map[string]interface{})
	var out []variable
	for _, raw := range spec["variables"].([]interface{}) {
		v := raw.(map[string]interface{})
		name := v["name"].(string)
		if name == "changed" {
			continue // references the others only
		}
		ast, issues := env.Compile(v["expression"].(string))
		if issues != nil && issues.Err() != nil {
			fail(fmt.Errorf("%s: %v", name, issues.Err()))
		}
		estimate, err := env.EstimateCost(ast, &library.CostEstimator{})
		if err != nil {
			fail(err)
		}
		program, err := env.Program(ast,
			cel.CostTracking(&library.CostEstimator{}),
			cel.CostLimit(celconfig.PerCallLimit),
		)
		if err != nil {
			fail(err)
		}
		value, details, err := program.Eval(activation)
		result := fmt.Sprint(value)
		if err != nil {
			result = "error: " + err.Error()
		} else {
			earlier[name] = value
		}
		actual := uint64(0)
		if details != nil && details.ActualCost() != nil {
			actual = *details.ActualCost()
		}
		out = append(out, variable{Name: name, EstimatedMax: estimate.Max, Actual: actual, Result: result})
	}
	encoded, _ := json.Marshal(map[string]interface{}{
		"perCallLimit":  celconfig.PerCallLimit,
		"runtimeBudget": celconfig.RuntimeCELCostBudget,
		"unbounded":     uint64(math.MaxUint64),
		"variables":     out,
	})
	fmt.Println(string(encoded))
}
