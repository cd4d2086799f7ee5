package server

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // the OpenAPI description is compiled in
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"gopkg.in/yaml.v3"
)

// openAPISpec is the OpenAPI 3.1 description of the HTTP surface. This file,
// server/openapi.yaml, is the one source; docs/openapi.yaml is a copy that a
// test keeps identical (go:embed cannot reach outside the package).
//
//go:embed openapi.yaml
var openAPISpec []byte

// OpenAPISpec returns the OpenAPI 3.1 description served at /openapi.yaml.
func OpenAPISpec() []byte { return bytes.Clone(openAPISpec) }

// MountOpenAPI mounts GET /openapi.yaml (the description) and GET /docs (a
// reference page for people, rendered once here from the parsed description:
// no JavaScript, no external resources, a Content-Security-Policy that allows
// only its own inline stylesheet).
func (s *Server) MountOpenAPI() error {
	page, err := RenderAPIReference(openAPISpec)
	if err != nil {
		return fmt.Errorf("render the API reference from server/openapi.yaml: %w", err)
	}
	yamlDoc := staticDoc{body: openAPISpec, contentType: "application/yaml; charset=utf-8", etag: strongETag(openAPISpec),
		csp: "default-src 'none'; frame-ancestors 'none'"}
	htmlDoc := staticDoc{body: page, contentType: "text/html; charset=utf-8", etag: strongETag(page),
		csp: "default-src 'none'; style-src '" + styleHash + "'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}
	s.echo.GET("/openapi.yaml", yamlDoc.serve)
	// The reference is a page a browser opens: a malformed query is
	// answered with the pages' HTML error page (see cleanQuery).
	return s.MarkPages(func(e *echo.Echo) error {
		e.GET("/docs", htmlDoc.serve)
		return nil
	})
}

// staticDoc is a document served from memory with a strong ETag.
type staticDoc struct {
	body        []byte
	contentType string
	etag        string
	csp         string
}

func (d staticDoc) serve(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "public, max-age=300")
	h.Set("ETag", d.etag)
	h.Set("Content-Security-Policy", d.csp)
	if match := c.Request().Header["If-None-Match"]; len(match) > 0 && etagMatches(match, d.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, d.contentType, d.body)
}

// refPage is the parsed description as the reference page needs it.
type refPage struct {
	Title, Version, Summary string
	Description             template.HTML
	Tags                    []refTag
	Schemas                 []refSchema
}

type refTag struct {
	Name        string
	Description template.HTML
	Ops         []refOp
}

type refOp struct {
	ID, Method, Path, Summary string
	Description               template.HTML
	Security                  []string
	Params                    []refParam
	Body                      []refMedia
	BodyRequired              bool
	Responses                 []refResponse
}

type refParam struct {
	Name, In, Type string
	Required       bool
	Description    template.HTML
}

type refMedia struct {
	ContentType string
	Schema      template.HTML
}

type refResponse struct {
	Status      string
	Description template.HTML
	Headers     []refParam
	Content     []refMedia
}

type refSchema struct {
	Name        string
	Type        template.HTML
	Description template.HTML
	Props       []refProp
}

type refProp struct {
	Name        string
	Type        template.HTML
	Required    bool
	Description template.HTML
}

// spec is a generic view of the YAML document with local $ref resolution.
type spec struct{ root map[string]any }

func (sp spec) resolve(v any) map[string]any {
	m, _ := v.(map[string]any)
	for i := 0; i < 16 && m != nil; i++ {
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		m = sp.pointer(ref)
	}
	return m
}

// pointer follows a local JSON pointer such as #/components/schemas/User.
func (sp spec) pointer(ref string) map[string]any {
	if !strings.HasPrefix(ref, "#/") {
		return nil
	}
	var cur any = sp.root
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	m, _ := cur.(map[string]any)
	return m
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func list(m map[string]any, k string) []any {
	l, _ := m[k].([]any)
	return l
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var (
	codeSpan = regexp.MustCompile("`([^`]+)`")
	bullet   = regexp.MustCompile(`^\s*[*-] `)
)

// prose renders the small Markdown subset the description uses (paragraphs,
// bullet lists, `code`) as HTML, escaping everything else.
func prose(s string) template.HTML {
	var b strings.Builder
	inList := false
	for _, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		lines := strings.Split(para, "\n")
		if bullet.MatchString(lines[0]) {
			if !inList {
				b.WriteString("<ul>")
				inList = true
			}
			var item []string
			flush := func() {
				if len(item) > 0 {
					b.WriteString("<li>" + inline(strings.Join(item, " ")) + "</li>")
					item = nil
				}
			}
			for _, l := range lines {
				if bullet.MatchString(l) {
					flush()
					l = bullet.ReplaceAllString(l, "")
				}
				item = append(item, strings.TrimSpace(l))
			}
			flush()
			continue
		}
		if inList {
			b.WriteString("</ul>")
			inList = false
		}
		for i := range lines {
			lines[i] = strings.TrimSpace(lines[i])
		}
		b.WriteString("<p>" + inline(strings.Join(lines, " ")) + "</p>")
	}
	if inList {
		b.WriteString("</ul>")
	}
	return template.HTML(b.String()) //nolint:gosec // every piece of text went through inline, which escapes it
}

// inline escapes text and turns `code` spans into <code>.
func inline(s string) string {
	return codeSpan.ReplaceAllString(template.HTMLEscapeString(s), "<code>$1</code>")
}

// typeOf describes a schema in a few words, linking component schemas.
func (sp spec) typeOf(v any, depth int) template.HTML {
	m, _ := v.(map[string]any)
	if m == nil {
		return "any"
	}
	if ref := str(m, "$ref"); ref != "" {
		name := ref[strings.LastIndex(ref, "/")+1:]
		return template.HTML(`<a href="#schema-` + template.HTMLEscapeString(name) + `">` + template.HTMLEscapeString(name) + `</a>`) //nolint:gosec // escaped
	}
	if depth > 4 {
		return "…"
	}
	if c, ok := m["const"]; ok {
		return template.HTML("<code>" + template.HTMLEscapeString(fmt.Sprintf("%#v", c)) + "</code>") //nolint:gosec // escaped
	}
	if e := list(m, "enum"); len(e) > 0 {
		parts := make([]string, len(e))
		for i, x := range e {
			parts[i] = "<code>" + template.HTMLEscapeString(fmt.Sprint(x)) + "</code>"
		}
		return template.HTML("one of " + strings.Join(parts, ", ")) //nolint:gosec // escaped
	}
	for _, k := range []string{"oneOf", "anyOf"} {
		if alts := list(m, k); len(alts) > 0 {
			parts := make([]string, len(alts))
			for i, a := range alts {
				parts[i] = string(sp.typeOf(a, depth+1))
			}
			return template.HTML(strings.Join(parts, " | ")) //nolint:gosec // built from escaped parts
		}
	}
	var types []string
	switch t := m["type"].(type) {
	case string:
		types = []string{t}
	case []any:
		for _, x := range t {
			types = append(types, fmt.Sprint(x))
		}
	}
	for i, t := range types {
		switch t {
		case "array":
			types[i] = "array of " + string(sp.typeOf(m["items"], depth+1))
		case "object":
			if _, ok := m["properties"]; ok && depth > 0 {
				types[i] = "object {" + strings.Join(sortedKeys(mapOf(m["properties"])), ", ") + "}"
			}
		default:
			types[i] = template.HTMLEscapeString(t)
		}
	}
	out := strings.Join(types, " or ")
	if f := str(m, "format"); f != "" {
		out += " (" + template.HTMLEscapeString(f) + ")"
	}
	if out == "" {
		out = "any"
	}
	return template.HTML(out) //nolint:gosec // built from escaped parts
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

var methodOrder = []string{"get", "post", "put", "patch", "delete", "options", "head"}

// RenderAPIReference renders an OpenAPI document as a self-contained HTML
// reference page: every operation grouped by tag with its method, path,
// summary, parameters, request body and responses, then every schema.
func RenderAPIReference(doc []byte) ([]byte, error) {
	var root map[string]any
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("parse OpenAPI document: %w", err)
	}
	sp := spec{root: root}
	info := mapOf(root["info"])
	page := refPage{Title: str(info, "title"), Version: str(info, "version"), Summary: str(info, "summary"),
		Description: prose(str(info, "description"))}
	tagIndex := map[string]int{}
	for _, t := range list(root, "tags") {
		tm := mapOf(t)
		tagIndex[str(tm, "name")] = len(page.Tags)
		page.Tags = append(page.Tags, refTag{Name: str(tm, "name"), Description: prose(str(tm, "description"))})
	}
	paths := mapOf(root["paths"])
	if len(paths) == 0 {
		return nil, fmt.Errorf("the OpenAPI document has no paths")
	}
	for _, path := range pathOrder(doc, paths) {
		item := mapOf(paths[path])
		for _, method := range methodOrder {
			om := mapOf(item[method])
			if om == nil {
				continue
			}
			op := refOp{ID: str(om, "operationId"), Method: strings.ToUpper(method), Path: path, Summary: str(om, "summary"),
				Description: prose(str(om, "description"))}
			if op.ID == "" {
				return nil, fmt.Errorf("%s %s has no operationId", op.Method, path)
			}
			for _, req := range list(om, "security") {
				names := sortedKeys(mapOf(req))
				if len(names) == 0 {
					names = []string{"none"}
				}
				op.Security = append(op.Security, strings.Join(names, " + "))
			}
			for _, p := range append(slices.Clone(list(item, "parameters")), list(om, "parameters")...) {
				pm := sp.resolve(p)
				req, _ := pm["required"].(bool)
				op.Params = append(op.Params, refParam{Name: str(pm, "name"), In: str(pm, "in"), Required: req,
					Type: string(sp.typeOf(pm["schema"], 1)), Description: prose(str(pm, "description"))})
			}
			if rb := sp.resolve(om["requestBody"]); rb != nil {
				op.BodyRequired, _ = rb["required"].(bool)
				op.Body = sp.media(mapOf(rb["content"]))
			}
			resps := mapOf(om["responses"])
			for _, status := range sortedKeys(resps) {
				rm := sp.resolve(resps[status])
				r := refResponse{Status: status, Description: prose(str(rm, "description")), Content: sp.media(mapOf(rm["content"]))}
				hdrs := mapOf(rm["headers"])
				for _, name := range sortedKeys(hdrs) {
					hm := sp.resolve(hdrs[name])
					req, _ := hm["required"].(bool)
					r.Headers = append(r.Headers, refParam{Name: name, Required: req, Type: string(sp.typeOf(hm["schema"], 1)),
						Description: prose(str(hm, "description"))})
				}
				op.Responses = append(op.Responses, r)
			}
			tags := list(om, "tags")
			if len(tags) == 0 {
				return nil, fmt.Errorf("%s %s has no tag", op.Method, path)
			}
			i, ok := tagIndex[fmt.Sprint(tags[0])]
			if !ok {
				return nil, fmt.Errorf("%s %s names the undeclared tag %v", op.Method, path, tags[0])
			}
			page.Tags[i].Ops = append(page.Tags[i].Ops, op)
		}
	}
	schemas := mapOf(mapOf(root["components"])["schemas"])
	for _, name := range sortedKeys(schemas) {
		m := mapOf(schemas[name])
		rs := refSchema{Name: name, Type: sp.typeOf(m, 0), Description: prose(str(m, "description"))}
		required := map[string]bool{}
		for _, r := range list(m, "required") {
			required[fmt.Sprint(r)] = true
		}
		props := mapOf(m["properties"])
		for _, p := range sortedKeys(props) {
			pm := mapOf(props[p])
			rs.Props = append(rs.Props, refProp{Name: p, Type: sp.typeOf(pm, 1), Required: required[p],
				Description: prose(str(pm, "description"))})
		}
		page.Schemas = append(page.Schemas, rs)
	}
	var out bytes.Buffer
	if err := referenceTemplate.Execute(&out, page); err != nil {
		return nil, fmt.Errorf("render the reference page: %w", err)
	}
	return out.Bytes(), nil
}

// pathOrder lists the paths in the order the document writes them (a Go map
// forgets it), so the page follows the document.
func pathOrder(doc []byte, paths map[string]any) []string {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil || len(root.Content) == 0 {
		return sortedKeys(paths)
	}
	top := root.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "paths" {
			continue
		}
		var out []string
		for j := 0; j+1 < len(top.Content[i+1].Content); j += 2 {
			out = append(out, top.Content[i+1].Content[j].Value)
		}
		if len(out) == len(paths) {
			return out
		}
	}
	return sortedKeys(paths)
}

func (sp spec) media(content map[string]any) []refMedia {
	var out []refMedia
	for _, ct := range sortedKeys(content) {
		out = append(out, refMedia{ContentType: ct, Schema: sp.typeOf(mapOf(content[ct])["schema"], 0)})
	}
	return out
}

// referenceStyle is the page's only stylesheet, allowed by its hash.
const referenceStyle = `
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:70rem;padding:1rem 2rem;color:#1b1b1b}
h1,h2,h3{line-height:1.25}h2{border-bottom:2px solid #1f4e79;padding-bottom:.2rem;margin-top:2.5rem}
code{font:13px ui-monospace,Menlo,Consolas,monospace;background:#f2f4f7;padding:0 .25rem;border-radius:3px}
nav ul{columns:3;padding-left:1.2rem}nav li{break-inside:avoid}
section.op{border:1px solid #d0d7de;border-radius:6px;margin:1rem 0;padding:.2rem 1rem}
.method{display:inline-block;min-width:4.5rem;font-weight:700;color:#fff;background:#1f4e79;border-radius:4px;text-align:center;padding:0 .3rem;margin-right:.5rem}
.method.POST{background:#2f7d32}.method.DELETE{background:#b3261e}.method.PATCH{background:#8a5a00}
table{border-collapse:collapse;width:100%;margin:.4rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td p,li p{margin:.2rem 0}.req{color:#b3261e;font-size:12px}
`

var styleHash = func() string {
	sum := sha256.Sum256([]byte(referenceStyle))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}()

var referenceTemplate = template.Must(template.New("reference").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} API reference</title>
<style>` + referenceStyle + `</style>
</head>
<body>
<header>
<h1>{{.Title}} API reference <small>(version {{.Version}})</small></h1>
<p>{{.Summary}} The machine-readable description is <a href="openapi.yaml">openapi.yaml</a> (OpenAPI 3.1).</p>
{{.Description}}
</header>
<nav aria-label="Operations">
<h2>Contents</h2>
{{range .Tags}}{{if .Ops}}<h3><a href="#tag-{{.Name}}">{{.Name}}</a></h3>
<ul>{{range .Ops}}<li><a href="#op-{{.ID}}"><code>{{.Method}} {{.Path}}</code></a> {{.Summary}}</li>{{end}}</ul>{{end}}{{end}}
<p><a href="#schemas">Schemas</a></p>
</nav>
<main>
{{range .Tags}}{{if .Ops}}
<h2 id="tag-{{.Name}}">{{.Name}}</h2>
{{.Description}}
{{range .Ops}}<section class="op" id="op-{{.ID}}">
<h3><span class="method {{.Method}}">{{.Method}}</span><code>{{.Path}}</code></h3>
<p><strong>{{.Summary}}</strong></p>
{{.Description}}
{{if .Security}}<p>Authentication: {{range $i, $s := .Security}}{{if $i}} or {{end}}<code>{{$s}}</code>{{end}}</p>{{end}}
{{if .Params}}<h4>Parameters</h4>
<table><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr>
{{range .Params}}<tr><td><code>{{.Name}}</code>{{if .Required}} <span class="req">required</span>{{end}}</td><td>{{.In}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
{{if .Body}}<h4>Request body{{if .BodyRequired}} <span class="req">required</span>{{end}}</h4>
<table><tr><th>Content type</th><th>Schema</th></tr>
{{range .Body}}<tr><td><code>{{.ContentType}}</code></td><td>{{.Schema}}</td></tr>
{{end}}</table>{{end}}
<h4>Responses</h4>
<table><tr><th>Status</th><th>Description</th><th>Body</th><th>Headers</th></tr>
{{range .Responses}}<tr><td><strong>{{.Status}}</strong></td><td>{{.Description}}</td>
<td>{{range .Content}}<code>{{.ContentType}}</code>: {{.Schema}}<br>{{else}}none{{end}}</td>
<td>{{range .Headers}}<code>{{.Name}}</code>{{if .Required}} <span class="req">always</span>{{end}}<br>{{end}}</td></tr>
{{end}}</table>
</section>
{{end}}{{end}}{{end}}
<h2 id="schemas">Schemas</h2>
{{range .Schemas}}<section class="op" id="schema-{{.Name}}">
<h3>{{.Name}}</h3>
<p>{{.Type}}</p>
{{.Description}}
{{if .Props}}<table><tr><th>Property</th><th>Type</th><th>Description</th></tr>
{{range .Props}}<tr><td><code>{{.Name}}</code>{{if .Required}} <span class="req">required</span>{{end}}</td><td>{{.Type}}</td><td>{{.Description}}</td></tr>
{{end}}</table>{{end}}
</section>
{{end}}
</main>
</body>
</html>
`))
