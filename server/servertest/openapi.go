package servertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/portcullis-auth/portcullis/server"
)

// OpenAPI validation of every response the test Client sees.
//
// The description is the one the server embeds and serves at /openapi.yaml
// (server/openapi.yaml; a test in package server keeps docs/openapi.yaml
// byte-for-byte identical to it). It is declared OpenAPI 3.1 and loaded as
// such: kin-openapi v0.152 parses, validates and routes 3.1 documents, so no
// version override is needed and the document uses 3.1 constructs freely
// (type arrays with "null", const, examples).
//
// kin-openapi checks the route, the status and the documented headers
// (openapi3filter.ValidateResponse with IncludeResponseStatus). Bodies are
// validated here with the JSON Schema 2020-12 validator kin-openapi itself
// uses (santhosh-tekuri/jsonschema), because kin-openapi recompiles a schema
// on every validation (about 1 ms each); compiling each response schema once
// from the document keeps the check cheap. Formats (date-time) are asserted.
//
// The rules:
//   - A request the description routes: a status the operation does not list
//     fails, as do a missing required header, a header or body that does not
//     match its schema, a content type the response does not list, and a body
//     on a response documented without one.
//   - A request the description does not route (an unknown path, or a known
//     path with another method) must be answered 404 not_found or 405
//     method_not_allowed with an Error body. So an undocumented endpoint fails
//     the check as soon as a test gets anything else from it, while tests that
//     hit junk paths on purpose pass.
//   - A status the document lists under x-transport-responses (answered by
//     Go's HTTP server before routing: 400 for an unparseable request, 431
//     for oversized headers), with that response's content type, is
//     validated against it on any path.
//   - OPTIONS is answered by Echo and the CORS middleware, not by an
//     operation: a CORS preflight is 204 without a body on any path, a plain
//     OPTIONS 204 without a body on a documented path.

func init() { AddResponseCheck(CheckOpenAPI) }

// docURL names the description as a JSON Schema resource.
const docURL = "urn:portcullis:openapi"

type openAPIChecker struct {
	router routers.Router
	// transport are the responses of the HTTP server itself, by status
	// (x-transport-responses): a reference into #/components/responses.
	transport map[int]*openapi3.ResponseRef
	// malformedQuery is the 400 answered for a malformed query string on
	// any path whose operations answer no HTML (x-malformed-query-response).
	malformedQuery *openapi3.ResponseRef

	mu       sync.Mutex
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema // by JSON pointer into the document
}

var (
	openAPIOnce sync.Once
	openAPI     *openAPIChecker
	openAPIErr  error
)

// loadOpenAPI parses, validates and routes the description once per process.
func loadOpenAPI() (*openAPIChecker, error) {
	openAPIOnce.Do(func() { openAPI, openAPIErr = newOpenAPIChecker(server.OpenAPISpec()) })
	return openAPI, openAPIErr
}

func newOpenAPIChecker(spec []byte) (*openAPIChecker, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		return nil, fmt.Errorf("load server/openapi.yaml: %w", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		return nil, fmt.Errorf("server/openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route server/openapi.yaml: %w", err)
	}
	resource, err := jsonValue(spec, "application/yaml")
	if err != nil {
		return nil, fmt.Errorf("server/openapi.yaml as JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(docURL, resource); err != nil {
		return nil, fmt.Errorf("server/openapi.yaml as a JSON Schema resource: %w", err)
	}
	chk := &openAPIChecker{router: router, compiler: c, schemas: map[string]*jsonschema.Schema{},
		transport: map[int]*openapi3.ResponseRef{}}
	ext, _ := doc.Extensions["x-transport-responses"].(map[string]any)
	for status, v := range ext {
		code, err := strconv.Atoi(status)
		ref := componentResponse(doc, v)
		if err != nil || ref == nil {
			return nil, fmt.Errorf("x-transport-responses: %q must map a status to a $ref into #/components/responses", status)
		}
		chk.transport[code] = ref
	}
	if chk.malformedQuery = componentResponse(doc, doc.Extensions["x-malformed-query-response"]); chk.malformedQuery == nil {
		return nil, errors.New("x-malformed-query-response must be a $ref into #/components/responses")
	}
	if _, err := chk.schema("#/components/schemas/Error"); err != nil {
		return nil, err
	}
	return chk, nil
}

// componentResponse is the response v (an extension's {"$ref": ...}) names
// among the document's #/components/responses, or nil.
func componentResponse(doc *openapi3.T, v any) *openapi3.ResponseRef {
	m, _ := v.(map[string]any)
	ref, _ := m["$ref"].(string)
	name, ok := strings.CutPrefix(ref, "#/components/responses/")
	if !ok || doc.Components.Responses[name] == nil {
		return nil
	}
	return &openapi3.ResponseRef{Ref: ref, Value: doc.Components.Responses[name].Value}
}

// schema compiles the schema at a JSON pointer of the document once.
func (chk *openAPIChecker) schema(ptr string) (*jsonschema.Schema, error) {
	chk.mu.Lock()
	defer chk.mu.Unlock()
	if s, ok := chk.schemas[ptr]; ok {
		return s, nil
	}
	s, err := chk.compiler.Compile(docURL + ptr)
	if err != nil {
		return nil, fmt.Errorf("compile the schema at %s: %w", ptr, err)
	}
	chk.schemas[ptr] = s
	return s, nil
}

// CheckOpenAPI is the ResponseCheck that validates an exchange against the
// OpenAPI description. Every Client runs it (installed from init).
func CheckOpenAPI(req *http.Request, reqBody []byte, resp *http.Response, respBody []byte) error {
	chk, err := loadOpenAPI()
	if err != nil {
		return err
	}
	return chk.check(req, resp, respBody)
}

func (chk *openAPIChecker) check(req *http.Request, resp *http.Response, respBody []byte) error {
	if ref := chk.transport[resp.StatusCode]; ref != nil && ref.Value.Content.Get(resp.Header.Get("Content-Type")) != nil {
		return chk.checkBody(ref, resp, respBody, fmt.Sprintf("%s %s (answered by the HTTP server) %d", req.Method, req.URL.Path, resp.StatusCode), "")
	}
	if req.Method == http.MethodOptions {
		return chk.checkOptions(req, resp, respBody)
	}
	route, pathParams, err := chk.router.FindRoute(routingRequest(req))
	if req.Method == http.MethodHead && err != nil {
		// Every GET answers HEAD too (the description's conventions): the
		// GET operation's statuses and headers, with no content.
		get := routingRequest(req)
		get.Method = http.MethodGet
		if r, p, gerr := chk.router.FindRoute(get); gerr == nil {
			route, pathParams, err = r, p, nil
			if len(respBody) > 0 {
				return fmt.Errorf("HEAD %s %d has content %.200q", req.URL.Path, resp.StatusCode, respBody)
			}
		}
	}
	if resp.StatusCode == http.StatusBadRequest && server.QueryRefusal(req.URL.RawQuery) != nil &&
		chk.malformedQuery.Value.Content.Get(resp.Header.Get("Content-Type")) != nil && (err != nil || !answersHTML(route.Operation)) {
		return chk.checkBody(chk.malformedQuery, resp, respBody, fmt.Sprintf("%s %s (a malformed query) 400", req.Method, req.URL.Path), "")
	}
	if err != nil {
		var re *routers.RouteError
		if !errors.As(err, &re) {
			return fmt.Errorf("route the request: %w", err)
		}
		return chk.checkUnrouted(req, resp, respBody, re.Reason)
	}
	where := route.Method + " " + route.Path
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, ExcludeResponseBody: true, MultiError: true},
	}
	input.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), input); err != nil {
		return fmt.Errorf("%d does not match the OpenAPI description of %s: %w (body %.300q)", resp.StatusCode, where, err, respBody)
	}
	if req.Method == http.MethodHead {
		return nil
	}
	// kin-openapi never checks 304 (nor redirects); a status must still be listed.
	status := strconv.Itoa(resp.StatusCode)
	ref := route.Operation.Responses.Value(status)
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the OpenAPI description of %s does not list %s", where, status)
	}
	if resp.StatusCode == http.StatusNotModified {
		if len(respBody) > 0 {
			return fmt.Errorf("%s 304 has a body %.200q", where, respBody)
		}
		return nil
	}
	base := "#/paths/" + pointerToken(route.Path) + "/" + strings.ToLower(route.Method) + "/responses/" + status
	return chk.checkBody(ref, resp, respBody, where+" "+status, base)
}

// checkBody checks a body against a documented response: none when it has
// no content, else a listed content type and its schema. The schema is found
// at the response's $ref, or under base for a response written in place.
func (chk *openAPIChecker) checkBody(ref *openapi3.ResponseRef, resp *http.Response, respBody []byte, what, base string) error {
	if len(ref.Value.Content) == 0 {
		if len(respBody) > 0 {
			return fmt.Errorf("%s: the OpenAPI description has no body, but the response has %.200q", what, respBody)
		}
		return nil
	}
	ct := resp.Header.Get("Content-Type")
	media := ref.Value.Content.Get(ct)
	if media == nil {
		return fmt.Errorf("%s: the OpenAPI description does not list Content-Type %q", what, ct)
	}
	if media.Schema == nil {
		return nil
	}
	if ref.Ref != "" {
		base = ref.Ref // a shared response: #/components/responses/…
	}
	var key string
	for k, m := range ref.Value.Content {
		if m == media {
			key = k
		}
	}
	return chk.validateBody(base+"/content/"+pointerToken(key)+"/schema", ct, respBody, what)
}

// validateBody decodes a body by its content type and validates it against
// the schema at ptr.
func (chk *openAPIChecker) validateBody(ptr, contentType string, body []byte, what string) error {
	s, err := chk.schema(ptr)
	if err != nil {
		return err
	}
	v, err := jsonValue(body, contentType)
	if err != nil {
		return fmt.Errorf("%s: the body is not %s: %w (body %.200q)", what, contentType, err, body)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: the body does not match %s: %w (body %.300q)", what, ptr, err, body)
	}
	return nil
}

// jsonValue decodes a body into the values a JSON Schema validates: JSON
// (exactly one value, numbers kept exact) and YAML as their data, anything
// else as a string.
func jsonValue(body []byte, contentType string) (any, error) {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("more than one JSON value")
		}
		return v, nil
	case mt == "application/yaml":
		var v any
		if err := yaml.Unmarshal(body, &v); err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		return jsonValue(b, "application/json")
	}
	return string(body), nil
}

// pointerToken escapes a JSON pointer token (RFC 6901).
func pointerToken(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// checkUnrouted accepts only 404 and 405 answers with an Error body for
// requests the description does not know.
func (chk *openAPIChecker) checkUnrouted(req *http.Request, resp *http.Response, respBody []byte, reason string) error {
	want := map[int]string{http.StatusNotFound: "not_found", http.StatusMethodNotAllowed: "method_not_allowed"}
	code, ok := want[resp.StatusCode]
	if !ok {
		return fmt.Errorf("%s %s is not in the OpenAPI description (%s) but was answered %d: describe the endpoint in server/openapi.yaml",
			req.Method, req.URL.Path, reason, resp.StatusCode)
	}
	if req.Method == http.MethodHead {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return fmt.Errorf("%s %s: a %d answer must be an application/json Error, got Content-Type %q",
			req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	what := fmt.Sprintf("%s %s (not described) %d", req.Method, req.URL.Path, resp.StatusCode)
	if err := chk.validateBody("#/components/schemas/Error", "application/json", respBody, what); err != nil {
		return err
	}
	var body struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(respBody, &body)
	if body.Error != code {
		return fmt.Errorf("%s: error %q, want %q", what, body.Error, code)
	}
	return nil
}

// answersHTML reports whether any response of op is an HTML page: the
// operation is one of the browser pages.
func answersHTML(op *openapi3.Operation) bool {
	for _, r := range op.Responses.Map() {
		if r.Value != nil && r.Value.Content.Get("text/html") != nil {
			return true
		}
	}
	return false
}

// checkOptions: a CORS preflight is 204 without a body on any path; a plain
// OPTIONS is 204 without a body on a documented path, else as unrouted.
func (chk *openAPIChecker) checkOptions(req *http.Request, resp *http.Response, respBody []byte) error {
	if req.Header.Get("Access-Control-Request-Method") == "" && !chk.knownPath(req) {
		return chk.checkUnrouted(req, resp, respBody, routers.ErrPathNotFound.Error())
	}
	if resp.StatusCode != http.StatusNoContent || len(respBody) > 0 {
		return fmt.Errorf("OPTIONS %s: want 204 without a body, got %d %.200q", req.URL.Path, resp.StatusCode, respBody)
	}
	return nil
}

// knownPath reports whether the description has an operation on the
// request's path with any method.
func (chk *openAPIChecker) knownPath(req *http.Request) bool {
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		r := routingRequest(req)
		r.Method = m
		if _, _, err := chk.router.FindRoute(r); err == nil {
			return true
		}
	}
	return false
}

// routingRequest is req as Echo routes it: on the escaped path when the
// request has one (so %2F stays inside one segment), else on the path.
func routingRequest(req *http.Request) *http.Request {
	r := req.Clone(context.Background())
	if raw := req.URL.RawPath; raw != "" {
		u := *req.URL
		u.Path, u.RawPath = raw, ""
		r.URL = &u
	}
	return r
}
