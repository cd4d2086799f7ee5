package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const k8sDir = "k8s"

// kustomization is the part of kustomize's Kustomization this repository
// uses; anything else in kustomization.yaml is refused.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// kinds maps apiVersion/kind to a fresh typed object. A kind missing here is
// refused, so a manifest cannot slip past the strict decoding.
var kinds = map[string]func() any{
	"v1/Namespace":                                  func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                                  func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                                     func() any { return &corev1.Secret{} },
	"v1/Service":                                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                            func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                                  func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":                 func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":        func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"networking.k8s.io/v1/NetworkPolicy":            func() any { return &networkingv1.NetworkPolicy{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeManifests strictly decodes every YAML document of data into its
// k8s.io/api type: unknown or repeated fields, wrong types and unknown kinds
// are errors, and so is any key the typed object silently drops (encoding/json
// matches field names case-insensitively; Kubernetes does not).
func decodeManifests(name string, data []byte) ([]any, error) {
	var out []any
	for i, doc := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("%s document %d: %w", name, i+1, err)
		}
		mk, ok := kinds[tm.APIVersion+"/"+tm.Kind]
		if !ok {
			return nil, fmt.Errorf("%s document %d: unknown apiVersion/kind %q/%q", name, i+1, tm.APIVersion, tm.Kind)
		}
		obj := mk()
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s document %d (%s): %w", name, i+1, tm.Kind, err)
		}
		if err := keysSurvive([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s document %d (%s): %w", name, i+1, tm.Kind, err)
		}
		out = append(out, obj)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no object", name)
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// keysSurvive checks that every key path written in doc is still there after
// decoding obj and encoding it again, with the same spelling.
func keysSurvive(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("convert to JSON: %w", err)
	}
	var written, kept any
	if err := json.Unmarshal(js, &written); err != nil {
		return fmt.Errorf("decode JSON: %w", err)
	}
	again, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("encode typed object: %w", err)
	}
	if err := json.Unmarshal(again, &kept); err != nil {
		return fmt.Errorf("decode typed object: %w", err)
	}
	keptPaths := map[string]bool{}
	for _, p := range keyPaths("", kept) {
		keptPaths[p] = true
	}
	var lost []string
	for _, p := range keyPaths("", written) {
		if !keptPaths[p] {
			lost = append(lost, p)
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("fields not in the API type (misspelt, wrong case, or a zero value the API drops): %v", lost)
	}
	return nil
}

func keyPaths(prefix string, v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			p := prefix + "." + k
			out = append(out, p)
			out = append(out, keyPaths(p, c)...)
		}
	case []any:
		for i, c := range v {
			out = append(out, keyPaths(prefix+"["+strconv.Itoa(i)+"]", c)...)
		}
	}
	return out
}

// manifests is every object of deploy/k8s, by file.
type manifests struct {
	files   map[string][]any
	kust    *kustomization
	deploy  *appsv1.Deployment
	job     *batchv1.Job
	svc     *corev1.Service
	pdb     *policyv1.PodDisruptionBudget
	hpa     *autoscalingv2.HorizontalPodAutoscaler
	netpol  *networkingv1.NetworkPolicy
	ns      *corev1.Namespace
	configs map[string]*corev1.ConfigMap
	secrets map[string]*corev1.Secret
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if more, _ := filepath.Glob(filepath.Join(k8sDir, "*.yml")); len(more) > 0 {
		t.Fatalf("use .yaml, not .yml: %v", more)
	}
	m := &manifests{files: map[string][]any{}, configs: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	one := func(kind string, dst, src any) {
		if !reflectSetOnce(dst, src) {
			t.Fatalf("more than one %s in %s", kind, k8sDir)
		}
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(p, data)
		if err != nil {
			t.Fatal(err)
		}
		m.files[filepath.Base(p)] = objs
		for _, o := range objs {
			switch o := o.(type) {
			case *kustomization:
				one("Kustomization", &m.kust, o)
			case *appsv1.Deployment:
				one("Deployment", &m.deploy, o)
			case *batchv1.Job:
				one("Job", &m.job, o)
			case *corev1.Service:
				one("Service", &m.svc, o)
			case *policyv1.PodDisruptionBudget:
				one("PodDisruptionBudget", &m.pdb, o)
			case *autoscalingv2.HorizontalPodAutoscaler:
				one("HorizontalPodAutoscaler", &m.hpa, o)
			case *networkingv1.NetworkPolicy:
				one("NetworkPolicy", &m.netpol, o)
			case *corev1.Namespace:
				one("Namespace", &m.ns, o)
			case *corev1.ConfigMap:
				m.configs[o.Name] = o
			case *corev1.Secret:
				m.secrets[o.Name] = o
			}
		}
	}
	for what, missing := range map[string]bool{
		"kustomization.yaml": m.kust == nil, "a Deployment": m.deploy == nil, "a migration Job": m.job == nil,
		"a Service": m.svc == nil, "a PodDisruptionBudget": m.pdb == nil, "a HorizontalPodAutoscaler": m.hpa == nil,
		"a NetworkPolicy": m.netpol == nil, "a Namespace": m.ns == nil,
		"a ConfigMap": len(m.configs) == 0, "a Secret example": len(m.secrets) == 0,
	} {
		if missing {
			t.Errorf("%s has no %s", k8sDir, what)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return m
}

// reflectSetOnce sets *dst = src when *dst is nil; false when already set.
func reflectSetOnce(dst, src any) bool {
	switch d := dst.(type) {
	case **kustomization:
		return setOnce(d, src.(*kustomization))
	case **appsv1.Deployment:
		return setOnce(d, src.(*appsv1.Deployment))
	case **batchv1.Job:
		return setOnce(d, src.(*batchv1.Job))
	case **corev1.Service:
		return setOnce(d, src.(*corev1.Service))
	case **policyv1.PodDisruptionBudget:
		return setOnce(d, src.(*policyv1.PodDisruptionBudget))
	case **autoscalingv2.HorizontalPodAutoscaler:
		return setOnce(d, src.(*autoscalingv2.HorizontalPodAutoscaler))
	case **networkingv1.NetworkPolicy:
		return setOnce(d, src.(*networkingv1.NetworkPolicy))
	case **corev1.Namespace:
		return setOnce(d, src.(*corev1.Namespace))
	}
	panic(fmt.Sprintf("reflectSetOnce: %T", dst))
}

func setOnce[T any](dst **T, src *T) bool {
	if *dst != nil {
		return false
	}
	*dst = src
	return true
}

// TestK8sDecodeStrict: the validator refuses what Kubernetes would refuse or
// silently ignore, so a green run means something.
func TestK8sDecodeStrict(t *testing.T) {
	const deploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  replicas: 3
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: x
          image: x
          resources:
            requests: {cpu: 250m}
`
	cases := []struct {
		name, doc, want string
	}{
		{"ok/deployment", deploy, ""},
		{"ok/two-documents", deploy + "---\n# comment\n" + strings.Replace(deploy, "name: x\nspec", "name: y\nspec", 1), ""},
		{"fail/unknown-field", strings.Replace(deploy, "replicas: 3", "replicas: 3\n  replica: 3", 1), "unknown field"},
		{"fail/unknown-nested-field", strings.Replace(deploy, "image: x", "image: x\n          readinessCheck: {}", 1), "unknown field"},
		{"fail/wrong-case-nested", strings.Replace(deploy, "image: x", "image: x\n          readinessprobe: {}", 1), "readinessprobe"},
		{"fail/wrong-case", strings.Replace(deploy, "replicas: 3", "Replicas: 3", 1), "not in the API type"},
		{"fail/repeated-field", strings.Replace(deploy, "replicas: 3", "replicas: 3\n  replicas: 4", 1), "already set"},
		{"fail/wrong-type", strings.Replace(deploy, "replicas: 3", "replicas: three", 1), "replicas"},
		{"fail/bad-quantity", strings.Replace(deploy, "cpu: 250m", "cpu: lots", 1), "quantities"},
		{"fail/unknown-kind", strings.Replace(deploy, "kind: Deployment", "kind: Deploymnet", 1), "unknown apiVersion/kind"},
		{"fail/old-api-version", strings.Replace(deploy, "apps/v1", "extensions/v1beta1", 1), "unknown apiVersion/kind"},
		{"fail/empty", "# nothing\n", "no object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeManifests("test.yaml", []byte(c.doc))
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused a valid manifest: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted a manifest it should refuse (%s)", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestK8sManifestsDecode decodes every file and checks names and labels are
// what the API server accepts.
func TestK8sManifestsDecode(t *testing.T) {
	m := loadManifests(t)
	for file, objs := range m.files {
		for _, o := range objs {
			mo, ok := o.(metav1.Object)
			if !ok {
				continue
			}
			for _, p := range validation.IsDNS1123Subdomain(mo.GetName()) {
				t.Errorf("%s: name %q: %s", file, mo.GetName(), p)
			}
			if mo.GetNamespace() != "" {
				t.Errorf("%s: %s sets a namespace; kustomization.yaml sets it for every object", file, mo.GetName())
			}
			for k, v := range mo.GetLabels() {
				for _, p := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
					t.Errorf("%s: label %s=%s: %s", file, k, v, p)
				}
			}
		}
	}
	for _, p := range validation.IsDNS1035Label(m.svc.Name) {
		t.Errorf("Service name %q: %s", m.svc.Name, p)
	}
}

func TestK8sKustomization(t *testing.T) {
	m := loadManifests(t)
	k := m.kust
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s/%s", k.APIVersion, k.Kind)
	}
	if k.Namespace != m.ns.Name {
		t.Errorf("kustomization namespace %q, Namespace object %q", k.Namespace, m.ns.Name)
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if listed[r] {
			t.Errorf("kustomization lists %s twice", r)
		}
		listed[r] = true
		if _, ok := m.files[r]; !ok {
			t.Errorf("kustomization lists %s, which is not a manifest in %s", r, k8sDir)
		}
	}
	for file := range m.files {
		switch file {
		case "kustomization.yaml":
		case "secret.example.yaml":
			// Applying placeholders would overwrite the operator's real Secret.
			if listed[file] {
				t.Errorf("kustomization applies %s: its placeholders would replace the real Secret", file)
			}
		default:
			if !listed[file] {
				t.Errorf("%s is not listed in kustomization.yaml resources", file)
			}
		}
	}
	// Every container image is rewritten by the images: entry, so the servers
	// and the migration always run the same build.
	names := map[string]bool{}
	for _, im := range k.Images {
		names[im.Name] = true
		if im.NewTag == "" && im.Digest == "" {
			t.Errorf("images entry %s has neither newTag nor digest", im.Name)
		}
	}
	for _, c := range allContainers(m) {
		if !names[c.Image] {
			t.Errorf("container %s image %q is not rewritten by kustomization images %v", c.Name, c.Image, names)
		}
	}
	if ns := m.ns.Labels["pod-security.kubernetes.io/enforce"]; ns != "restricted" {
		t.Errorf("Namespace enforces Pod Security %q, want restricted", ns)
	}
}

func allContainers(m *manifests) []corev1.Container {
	var out []corev1.Container
	out = append(out, m.deploy.Spec.Template.Spec.InitContainers...)
	out = append(out, m.deploy.Spec.Template.Spec.Containers...)
	out = append(out, m.job.Spec.Template.Spec.InitContainers...)
	out = append(out, m.job.Spec.Template.Spec.Containers...)
	return out
}

// podEnv is the environment a container gets: envFrom sources first, then
// env (which wins), with the Secret example's placeholders replaced.
func podEnv(t *testing.T, m *manifests, c corev1.Container) (map[string]string, []string) {
	t.Helper()
	env := map[string]string{}
	var problems []string
	for _, src := range c.EnvFrom {
		switch {
		case src.ConfigMapRef != nil:
			cm, ok := m.configs[src.ConfigMapRef.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: envFrom ConfigMap %q does not exist", c.Name, src.ConfigMapRef.Name))
				continue
			}
			if src.ConfigMapRef.Optional != nil && *src.ConfigMapRef.Optional {
				problems = append(problems, fmt.Sprintf("container %s: ConfigMap %q is optional", c.Name, cm.Name))
			}
			for k, v := range cm.Data {
				env[src.Prefix+k] = v
			}
		case src.SecretRef != nil:
			s, ok := m.secrets[src.SecretRef.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: envFrom Secret %q does not exist", c.Name, src.SecretRef.Name))
				continue
			}
			if src.SecretRef.Optional != nil && *src.SecretRef.Optional {
				problems = append(problems, fmt.Sprintf("container %s: Secret %q is optional", c.Name, s.Name))
			}
			for k, v := range s.StringData {
				env[src.Prefix+k] = v
			}
			for k, v := range s.Data {
				env[src.Prefix+k] = string(v)
			}
		default:
			problems = append(problems, fmt.Sprintf("container %s: envFrom without a ConfigMap or Secret", c.Name))
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := m.configs[ref.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: %s refers to missing ConfigMap %q", c.Name, e.Name, ref.Name))
				continue
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: %s refers to missing key %s of ConfigMap %q", c.Name, e.Name, ref.Key, ref.Name))
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: %s refers to missing Secret %q", c.Name, e.Name, ref.Name))
				continue
			}
			v, ok := s.StringData[ref.Key]
			if !ok {
				b, okb := s.Data[ref.Key]
				v, ok = string(b), okb
			}
			if !ok {
				problems = append(problems, fmt.Sprintf("container %s: %s refers to missing key %s of Secret %q", c.Name, e.Name, ref.Key, ref.Name))
			}
			env[e.Name] = v
		default:
			problems = append(problems, fmt.Sprintf("container %s: %s uses a valueFrom this test does not resolve", c.Name, e.Name))
		}
	}
	return realize(t, env), problems
}

// checkEnv: every variable a container gets is a Portcullis setting and the
// server's configuration parser accepts the whole environment.
func checkEnv(t *testing.T, m *manifests, c corev1.Container) ([]string, map[string]string) {
	env, problems := podEnv(t, m, c)
	var names []string
	for k := range env {
		names = append(names, k)
		for _, p := range validation.IsEnvVarName(k) {
			problems = append(problems, fmt.Sprintf("container %s: env %s: %s", c.Name, k, p))
		}
	}
	if bad := unknownSettings(names); len(bad) > 0 {
		problems = append(problems, fmt.Sprintf("container %s sets variables that are not Portcullis settings: %v", c.Name, bad))
	}
	if _, err := loadConfig(env); err != nil {
		problems = append(problems, fmt.Sprintf("container %s: the server refuses its settings: %v", c.Name, err))
	}
	return problems, env
}

// checkPodSecurity: the restricted Pod Security Standard, and no token for
// the Kubernetes API.
func checkPodSecurity(what string, spec corev1.PodSpec) []string {
	var p []string
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		p = append(p, what+": pod securityContext.runAsNonRoot is not true")
	}
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		p = append(p, what+": pod securityContext.runAsUser is not a non-zero uid")
	}
	if sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		p = append(p, what+": pod seccompProfile is not RuntimeDefault")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p = append(p, what+": automountServiceAccountToken is not false")
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		p = append(p, what+": enableServiceLinks is not false (the Service \"portcullis\" would inject PORTCULLIS_* variables)")
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		p = append(p, what+": shares a host namespace")
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		cs := c.SecurityContext
		w := what + " container " + c.Name
		if cs == nil {
			p = append(p, w+": no securityContext")
			continue
		}
		if cs.RunAsNonRoot != nil && !*cs.RunAsNonRoot || cs.RunAsUser != nil && *cs.RunAsUser == 0 {
			p = append(p, w+": may run as root")
		}
		if cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
			p = append(p, w+": allowPrivilegeEscalation is not false")
		}
		if cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
			p = append(p, w+": readOnlyRootFilesystem is not true")
		}
		if cs.Privileged != nil && *cs.Privileged {
			p = append(p, w+": privileged")
		}
		if cs.Capabilities == nil || !slices.Contains(cs.Capabilities.Drop, "ALL") {
			p = append(p, w+": capabilities do not drop ALL")
		} else if len(cs.Capabilities.Add) > 0 {
			p = append(p, fmt.Sprintf("%s: adds capabilities %v", w, cs.Capabilities.Add))
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			p = append(p, w+": no CPU and memory requests")
		}
		if c.Resources.Limits.Memory().IsZero() {
			p = append(p, w+": no memory limit")
		}
		if c.ImagePullPolicy == corev1.PullAlways || c.ImagePullPolicy == "" {
			p = append(p, w+": imagePullPolicy should be IfNotPresent (images are pinned by kustomization)")
		}
	}
	return p
}

func httpGetProbe(what string, pr *corev1.Probe, path string, c corev1.Container) []string {
	if pr == nil {
		return []string{what + " probe missing"}
	}
	if pr.HTTPGet == nil {
		return []string{what + " probe is not an HTTP GET"}
	}
	var p []string
	if pr.HTTPGet.Path != path {
		p = append(p, fmt.Sprintf("%s probe path %q, want %s", what, pr.HTTPGet.Path, path))
	}
	if _, ok := containerPort(c, pr.HTTPGet.Port); !ok {
		p = append(p, fmt.Sprintf("%s probe port %s is not a port of container %s", what, pr.HTTPGet.Port.String(), c.Name))
	}
	return p
}

// containerPort resolves a named or numbered port of c.
func containerPort(c corev1.Container, port intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if port.Type == intstr.String && cp.Name == port.StrVal || port.Type == intstr.Int && cp.ContainerPort == port.IntVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// checkDeployment holds every rule for the server Deployment.
func checkDeployment(t *testing.T, m *manifests) []string {
	d := m.deploy
	var p []string
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		p = append(p, fmt.Sprintf("Deployment replicas = %v, want 3", ptrString(d.Spec.Replicas)))
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		p = append(p, fmt.Sprintf("Deployment selector invalid or empty: %v", err))
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		p = append(p, "Deployment selector does not match its own pod template")
	}
	if ru := d.Spec.Strategy.RollingUpdate; d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		p = append(p, "Deployment does not roll out with maxUnavailable 0")
	}
	spec := d.Spec.Template.Spec
	p = append(p, checkPodSecurity("Deployment", spec)...)
	if len(spec.Containers) != 1 {
		return append(p, fmt.Sprintf("Deployment has %d containers, want 1", len(spec.Containers)))
	}
	c := spec.Containers[0]
	if !slices.Equal(append(slices.Clone(c.Command), c.Args...), []string{"serve"}) {
		p = append(p, fmt.Sprintf("Deployment container runs %v, want [serve]", append(c.Command, c.Args...)))
	}
	envProblems, env := checkEnv(t, m, c)
	p = append(p, envProblems...)
	cfg, err := loadConfig(env)
	if err != nil {
		return p
	}
	if cfg.AutoMigrate {
		p = append(p, "Deployment has PORTCULLIS_AUTO_MIGRATE on; the migration Job migrates")
	}
	if cfg.Embedded() {
		p = append(p, "Deployment uses the embedded SQLite store; replicas need PostgreSQL")
	}
	_, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, _ := strconv.Atoi(portStr)
	host, _, _ := net.SplitHostPort(cfg.Addr)
	if host != "0.0.0.0" && host != "" && host != "::" {
		p = append(p, fmt.Sprintf("PORTCULLIS_ADDR %s listens on %s only; probes and the Service cannot reach it", cfg.Addr, host))
	}
	if _, ok := containerPort(c, intstr.FromInt32(int32(port))); !ok {
		p = append(p, fmt.Sprintf("PORTCULLIS_ADDR port %d is not a containerPort", port))
	}
	p = append(p, httpGetProbe("liveness", c.LivenessProbe, "/healthz", c)...)
	p = append(p, httpGetProbe("readiness", c.ReadinessProbe, "/readyz", c)...)
	p = append(p, httpGetProbe("startup", c.StartupProbe, "/healthz", c)...)
	if rp := c.ReadinessProbe; rp != nil && rp.TimeoutSeconds < 2 {
		p = append(p, "readiness timeoutSeconds below 2: /readyz may take 1.5 s to report a dead dependency")
	}
	// SIGTERM arrives after the preStop pause; the server then needs up to
	// its shutdown timeout.
	var pause time.Duration
	if lc := c.Lifecycle; lc != nil && lc.PreStop != nil && lc.PreStop.Sleep != nil {
		pause = time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
	}
	if spec.TerminationGracePeriodSeconds == nil {
		p = append(p, "terminationGracePeriodSeconds not set")
	} else if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace <= pause+cfg.ShutdownTimeout {
		p = append(p, fmt.Sprintf("terminationGracePeriodSeconds %s is not above the preStop pause %s + PORTCULLIS_SHUTDOWN_TIMEOUT %s", grace, pause, cfg.ShutdownTimeout))
	}
	return p
}

func ptrString[T any](v *T) string {
	if v == nil {
		return "unset"
	}
	return fmt.Sprint(*v)
}

// checkJob: the migration Job runs `portcullis migrate` on the server image
// with the servers' settings, and its pods never join the server's Service.
func checkJob(t *testing.T, m *manifests) []string {
	j := m.job
	var p []string
	spec := j.Spec.Template.Spec
	p = append(p, checkPodSecurity("Job", spec)...)
	if spec.RestartPolicy != corev1.RestartPolicyNever && spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		p = append(p, fmt.Sprintf("Job restartPolicy %q", spec.RestartPolicy))
	}
	if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit < 1 {
		p = append(p, "Job backoffLimit below 1: a database that is still starting fails the migration for good")
	}
	if len(spec.Containers) != 1 {
		return append(p, fmt.Sprintf("Job has %d containers, want 1", len(spec.Containers)))
	}
	c := spec.Containers[0]
	if !slices.Equal(append(slices.Clone(c.Command), c.Args...), []string{"migrate"}) {
		p = append(p, fmt.Sprintf("Job runs %v, want [migrate]", append(c.Command, c.Args...)))
	}
	if len(m.deploy.Spec.Template.Spec.Containers) > 0 && c.Image != m.deploy.Spec.Template.Spec.Containers[0].Image {
		p = append(p, fmt.Sprintf("Job image %q differs from the Deployment's", c.Image))
	}
	envProblems, env := checkEnv(t, m, c)
	p = append(p, envProblems...)
	if cfg, err := loadConfig(env); err == nil && cfg.Embedded() {
		p = append(p, "Job migrates the embedded SQLite store inside its own pod")
	}
	jobPods := labels.Set(j.Spec.Template.Labels)
	for what, sel := range podSelectors(m) {
		if sel.Matches(jobPods) {
			p = append(p, fmt.Sprintf("the %s selects the migration Job's pods", what))
		}
	}
	return p
}

// podSelectors are the selectors that must pick exactly the server pods.
func podSelectors(m *manifests) map[string]labels.Selector {
	out := map[string]labels.Selector{}
	out["Service"] = labels.SelectorFromSet(m.svc.Spec.Selector)
	if s, err := metav1.LabelSelectorAsSelector(m.pdb.Spec.Selector); err == nil {
		out["PodDisruptionBudget"] = s
	}
	if s, err := metav1.LabelSelectorAsSelector(&m.netpol.Spec.PodSelector); err == nil {
		out["NetworkPolicy"] = s
	}
	return out
}

// checkSelectors: Service, PDB, NetworkPolicy and HPA point at the server pods.
func checkSelectors(m *manifests) []string {
	var p []string
	pods := labels.Set(m.deploy.Spec.Template.Labels)
	if len(m.svc.Spec.Selector) == 0 {
		p = append(p, "Service has no selector")
	}
	if m.pdb.Spec.Selector == nil || len(m.pdb.Spec.Selector.MatchLabels)+len(m.pdb.Spec.Selector.MatchExpressions) == 0 {
		p = append(p, "PodDisruptionBudget has no selector")
	}
	if len(m.netpol.Spec.PodSelector.MatchLabels)+len(m.netpol.Spec.PodSelector.MatchExpressions) == 0 {
		p = append(p, "NetworkPolicy selects every pod of the namespace")
	}
	sels := podSelectors(m)
	for _, what := range []string{"Service", "PodDisruptionBudget", "NetworkPolicy"} {
		s, ok := sels[what]
		if !ok {
			p = append(p, what+" selector does not parse")
			continue
		}
		if !s.Matches(pods) {
			p = append(p, fmt.Sprintf("%s selector %s does not match the Deployment's pods %v", what, s, pods))
		}
	}
	c := m.deploy.Spec.Template.Spec.Containers[0]
	for _, sp := range m.svc.Spec.Ports {
		if _, ok := containerPort(c, sp.TargetPort); !ok {
			p = append(p, fmt.Sprintf("Service port %s targets %s, not a port of the server container", sp.Name, sp.TargetPort.String()))
		}
	}
	for _, rule := range m.netpol.Spec.Ingress {
		for _, np := range rule.Ports {
			if np.Port == nil {
				continue
			}
			if _, ok := containerPort(c, *np.Port); !ok {
				p = append(p, fmt.Sprintf("NetworkPolicy allows port %s, not a port of the server container", np.Port.String()))
			}
		}
	}
	if !slices.Contains(m.netpol.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || len(m.netpol.Spec.Ingress) == 0 {
		p = append(p, "NetworkPolicy does not restrict ingress to named sources")
	}
	for _, rule := range m.netpol.Spec.Ingress {
		if len(rule.From) == 0 {
			p = append(p, "a NetworkPolicy rule admits every source; PORTCULLIS_TRUSTED_PROXIES would then be forgeable")
		}
	}
	return p
}

// checkScaling: HPA and PDB fit the Deployment and each other.
func checkScaling(m *manifests) []string {
	var p []string
	h, pdb, d := m.hpa, m.pdb, m.deploy
	ref := h.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		p = append(p, fmt.Sprintf("HPA scales %s %s %s, not Deployment %s", ref.APIVersion, ref.Kind, ref.Name, d.Name))
	}
	if h.Spec.MinReplicas == nil || d.Spec.Replicas == nil || *h.Spec.MinReplicas != *d.Spec.Replicas {
		p = append(p, fmt.Sprintf("HPA minReplicas %s differs from the Deployment's replicas %s", ptrString(h.Spec.MinReplicas), ptrString(d.Spec.Replicas)))
	}
	if h.Spec.MinReplicas != nil && h.Spec.MaxReplicas <= *h.Spec.MinReplicas {
		p = append(p, "HPA maxReplicas is not above minReplicas")
	}
	cpu := false
	for _, mt := range h.Spec.Metrics {
		if mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil && mt.Resource.Name == corev1.ResourceCPU &&
			mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType && mt.Resource.Target.AverageUtilization != nil {
			cpu = true
		}
	}
	if !cpu {
		p = append(p, "HPA does not scale on CPU utilization")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.Type != intstr.Int || pdb.Spec.MinAvailable.IntVal != 2 {
		p = append(p, fmt.Sprintf("PDB minAvailable = %v, want 2", pdb.Spec.MinAvailable))
	} else if h.Spec.MinReplicas != nil && *h.Spec.MinReplicas <= pdb.Spec.MinAvailable.IntVal {
		p = append(p, "HPA minReplicas is not above the PDB's minAvailable: a node drain could never evict a pod")
	}
	if pdb.Spec.MaxUnavailable != nil {
		p = append(p, "PDB sets both minAvailable and maxUnavailable")
	}
	return p
}

// checkConfigMaps: ConfigMaps hold only non-secret settings, Secrets only
// placeholders.
func checkConfigMaps(m *manifests) []string {
	var p []string
	known := settingNames()
	for name, cm := range m.configs {
		for k := range cm.Data {
			for _, e := range validation.IsConfigMapKey(k) {
				p = append(p, fmt.Sprintf("ConfigMap %s key %s: %s", name, k, e))
			}
			if s, ok := known[k]; ok && s.Secret {
				p = append(p, fmt.Sprintf("ConfigMap %s holds the secret setting %s; put it in the Secret", name, k))
			}
		}
		if len(cm.BinaryData) > 0 {
			p = append(p, fmt.Sprintf("ConfigMap %s has binaryData", name))
		}
	}
	for name, s := range m.secrets {
		if s.Labels["portcullis-auth/example"] != "true" || !strings.Contains(s.Annotations["portcullis-auth/example"], "EXAMPLE") {
			p = append(p, fmt.Sprintf("Secret %s is not marked as an example (label and annotation portcullis-auth/example)", name))
		}
		if len(s.Data) > 0 {
			p = append(p, fmt.Sprintf("Secret %s has base64 data: keep the example readable in stringData", name))
		}
		for k, v := range s.StringData {
			if !strings.Contains(v, placeholder) {
				p = append(p, fmt.Sprintf("Secret %s key %s is not a %s placeholder: never commit a real secret", name, k, placeholder))
			}
		}
		for _, k := range []string{"PORTCULLIS_DATABASE_URL", "PORTCULLIS_REDIS_URL", "PORTCULLIS_KEY_ENCRYPTION_KEY"} {
			if _, ok := s.StringData[k]; !ok {
				p = append(p, fmt.Sprintf("Secret %s does not show %s", name, k))
			}
		}
	}
	return p
}

func report(t *testing.T, problems []string) {
	t.Helper()
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}

func TestK8sDeployment(t *testing.T)   { report(t, checkDeployment(t, loadManifests(t))) }
func TestK8sMigrationJob(t *testing.T) { report(t, checkJob(t, loadManifests(t))) }
func TestK8sSelectors(t *testing.T)    { report(t, checkSelectors(loadManifests(t))) }
func TestK8sScaling(t *testing.T)      { report(t, checkScaling(loadManifests(t))) }
func TestK8sConfigAndSecret(t *testing.T) {
	report(t, checkConfigMaps(loadManifests(t)))
}

// TestK8sChecksCatchMistakes breaks the real manifests one way at a time and
// expects the matching check to say so.
func TestK8sChecksCatchMistakes(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(m *manifests)
		check  func(t *testing.T, m *manifests) []string
		want   string
	}{
		{"fail/replicas", func(m *manifests) { m.deploy.Spec.Replicas = ptr(int32(2)) }, checkDeployment, "replicas"},
		{"fail/liveness-on-readyz", func(m *manifests) { server(m).LivenessProbe.HTTPGet.Path = "/readyz" }, checkDeployment, "liveness probe path"},
		{"fail/readiness-missing", func(m *manifests) { server(m).ReadinessProbe = nil }, checkDeployment, "readiness probe missing"},
		{"fail/probe-port", func(m *manifests) { server(m).ReadinessProbe.HTTPGet.Port = intstr.FromString("metrics") }, checkDeployment, "readiness probe port"},
		{"fail/root", func(m *manifests) { m.deploy.Spec.Template.Spec.SecurityContext.RunAsNonRoot = ptr(false) }, checkDeployment, "runAsNonRoot"},
		{"fail/writable-root", func(m *manifests) { server(m).SecurityContext.ReadOnlyRootFilesystem = ptr(false) }, checkDeployment, "readOnlyRootFilesystem"},
		{"fail/capabilities", func(m *manifests) { server(m).SecurityContext.Capabilities.Drop = nil }, checkDeployment, "drop ALL"},
		{"fail/no-limits", func(m *manifests) { server(m).Resources.Limits = nil }, checkDeployment, "memory limit"},
		{"fail/auto-migrate", func(m *manifests) { server(m).Env = nil }, checkDeployment, "AUTO_MIGRATE"},
		{"fail/unknown-setting", func(m *manifests) {
			server(m).Env = append(server(m).Env, corev1.EnvVar{Name: "PORTCULLIS_ISUER", Value: "https://x"})
		}, checkDeployment, "PORTCULLIS_ISUER"},
		{"fail/bad-setting-value", func(m *manifests) {
			server(m).Env = append(server(m).Env, corev1.EnvVar{Name: "PORTCULLIS_ACCESS_TOKEN_TTL", Value: "forever"})
		}, checkDeployment, "refuses its settings"},
		{"fail/missing-configmap", func(m *manifests) { server(m).EnvFrom[0].ConfigMapRef.Name = "nope" }, checkDeployment, "does not exist"},
		{"fail/missing-secret", func(m *manifests) { m.job.Spec.Template.Spec.Containers[0].EnvFrom[1].SecretRef.Name = "nope" }, checkJob, "does not exist"},
		{"fail/grace-too-short", func(m *manifests) { m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(20)) }, checkDeployment, "terminationGracePeriodSeconds"},
		{"fail/service-links", func(m *manifests) { m.deploy.Spec.Template.Spec.EnableServiceLinks = nil }, checkDeployment, "enableServiceLinks"},
		{"fail/job-serves", func(m *manifests) { m.job.Spec.Template.Spec.Containers[0].Args = []string{"serve"} }, checkJob, "want [migrate]"},
		{"fail/job-image", func(m *manifests) { m.job.Spec.Template.Spec.Containers[0].Image = "other" }, checkJob, "image"},
		{"fail/job-in-service", func(m *manifests) { m.job.Spec.Template.Labels = m.deploy.Spec.Template.Labels }, checkJob, "selects the migration Job"},
		{"fail/service-selector", func(m *manifests) { m.svc.Spec.Selector = map[string]string{"app": "other"} }, noT(checkSelectors), "Service selector"},
		{"fail/pdb-selector", func(m *manifests) {
			m.pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "nope"}}
		}, noT(checkSelectors), "PodDisruptionBudget selector"},
		{"fail/service-port", func(m *manifests) { m.svc.Spec.Ports[0].TargetPort = intstr.FromInt32(9090) }, noT(checkSelectors), "targets 9090"},
		{"fail/netpol-open", func(m *manifests) { m.netpol.Spec.Ingress[0].From = nil }, noT(checkSelectors), "admits every source"},
		{"fail/hpa-target", func(m *manifests) { m.hpa.Spec.ScaleTargetRef.Name = "other" }, noT(checkScaling), "HPA scales"},
		{"fail/hpa-min", func(m *manifests) { m.hpa.Spec.MinReplicas = ptr(int32(2)) }, noT(checkScaling), "minReplicas"},
		{"fail/pdb-min", func(m *manifests) { v := intstr.FromInt32(1); m.pdb.Spec.MinAvailable = &v }, noT(checkScaling), "want 2"},
		{"fail/hpa-memory", func(m *manifests) { m.hpa.Spec.Metrics[0].Resource.Name = corev1.ResourceMemory }, noT(checkScaling), "CPU"},
		{"fail/real-secret", func(m *manifests) {
			for _, s := range m.secrets {
				s.StringData["PORTCULLIS_KEY_ENCRYPTION_KEY"] = "q7Kf2Yy0c8m0l7o6GgkQ2bQ7n3dL1vQk9w3yZ0bC1aE="
			}
		}, noT(checkConfigMaps), "never commit a real secret"},
		{"fail/secret-in-configmap", func(m *manifests) {
			for _, cm := range m.configs {
				cm.Data["PORTCULLIS_SMTP_URL"] = "smtp://a:b@c:25"
			}
		}, noT(checkConfigMaps), "secret setting"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := loadManifests(t)
			c.mutate(m)
			problems := c.check(t, m)
			for _, p := range problems {
				if strings.Contains(p, c.want) {
					return
				}
			}
			t.Fatalf("no problem mentions %q; got %q", c.want, problems)
		})
	}
	t.Run("ok/unbroken", func(t *testing.T) {
		m := loadManifests(t)
		var all []string
		all = append(all, checkDeployment(t, m)...)
		all = append(all, checkJob(t, m)...)
		all = append(all, checkSelectors(m)...)
		all = append(all, checkScaling(m)...)
		all = append(all, checkConfigMaps(m)...)
		if len(all) > 0 {
			t.Fatalf("the real manifests have problems: %q", all)
		}
	})
}

// noT adapts a check that needs no *testing.T.
func noT(f func(*manifests) []string) func(*testing.T, *manifests) []string {
	return func(_ *testing.T, m *manifests) []string { return f(m) }
}

func server(m *manifests) *corev1.Container { return &m.deploy.Spec.Template.Spec.Containers[0] }

func ptr[T any](v T) *T { return &v }

// TestK8sNoTabs: YAML indentation with tabs is an error in some tools and
// invisible in review.
func TestK8sNoTabs(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	paths = append(paths, "compose.yaml")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.IndexByte(b, '\t'); i >= 0 {
			t.Errorf("%s has a tab at byte %d", p, i)
		}
	}
}
