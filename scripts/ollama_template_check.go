// Renders an Ollama TEMPLATE with Go's text/template, the engine Ollama runs it with, over the
// conversations given on stdin, so scripts/ollama_template_check.py can compare the text with
// the chat template's Jinja rendering. Values carries only what llmtune's templates use
// (.Messages with .Role and .Content); Ollama's own Values type has more fields.
//
//	go run scripts/ollama_template_check.go < cases.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Values struct {
	Messages []Message
}

type Case struct {
	Template string      `json:"template"`
	Messages [][]Message `json:"conversations"`
}

func main() {
	var c Case
	if err := json.NewDecoder(os.Stdin).Decode(&c); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	tmpl, err := template.New("TEMPLATE").Parse(c.Template)
	if err != nil {
		fmt.Fprintln(os.Stderr, "template does not parse:", err)
		os.Exit(1)
	}
	out := []string{}
	for _, messages := range c.Messages {
		var b strings.Builder
		if err := tmpl.Execute(&b, Values{Messages: messages}); err != nil {
			fmt.Fprintln(os.Stderr, "template does not execute:", err)
			os.Exit(1)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
