// Command render_template renders the data of a Nomad job's template block
// with Go's text/template, the engine that Nomad's templates (consul-template)
// are built on, so the tests can feed the result to nomad-medic.
//
// Usage: render_template ENV.json < TEMPLATE > RENDERED
//
// ENV.json is a JSON object of strings: the task environment that the
// template's env function reads. Only the functions the shipped job files use
// are provided, with consul-template's semantics:
//
//	env NAME        the variable's value. A name missing from ENV.json is an
//	                error here, where consul-template would return "", so a
//	                typo in a job file fails the test.
//	split SEP TEXT  TEXT with surrounding white space removed, split at SEP;
//	                an empty TEXT gives an empty list.
//
// Any other function is a parse error, which names it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: render_template ENV.json < TEMPLATE > RENDERED")
		os.Exit(2)
	}

	envJSON, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "render_template: cannot read %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	var env map[string]string
	if err := json.Unmarshal(envJSON, &env); err != nil {
		fmt.Fprintf(os.Stderr, "render_template: %s is not a JSON object of strings: %v\n", os.Args[1], err)
		os.Exit(1)
	}

	text, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "render_template: cannot read the template from stdin: %v\n", err)
		os.Exit(1)
	}

	funcs := template.FuncMap{
		"env": func(name string) (string, error) {
			value, ok := env[name]
			if !ok {
				return "", fmt.Errorf("env %q: not in %s; add it there or fix the name", name, os.Args[1])
			}
			return value, nil
		},
		"split": func(sep, s string) []string {
			s = strings.TrimSpace(s)
			if s == "" {
				return []string{}
			}
			return strings.Split(s, sep)
		},
	}

	tmpl, err := template.New("data").Funcs(funcs).Option("missingkey=error").Parse(string(text))
	if err != nil {
		fmt.Fprintf(os.Stderr, "render_template: invalid template: %v\n", err)
		os.Exit(1)
	}
	if err := tmpl.Execute(os.Stdout, nil); err != nil {
		fmt.Fprintf(os.Stderr, "render_template: rendering failed: %v\n", err)
		os.Exit(1)
	}
}
