// Command gofloor is the floor the benchmarks measure pod-replace-guard against: the
// least work an admission webhook can do over TLS. It decodes the AdmissionReview,
// echoes its uid and allows it, except a review whose object carries the benchmark's
// probe finalizer, which it denies, so the benchmark can see that this webhook (and not
// another configuration) is in force. It logs nothing and keeps no metrics.
//
//	gofloor -bind 127.0.0.1:8443 -cert tls.crt -key tls.key
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"time"
)

// ProbeFinalizer is benchmarks/apiserver.py's PROBE: a review carrying it is denied.
const ProbeFinalizer = "bench.example.com/probe"

// DenyMessage is how benchmarks/apiserver.py tells this webhook's denial from ours.
const DenyMessage = "gofloor: probe denied"

type review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *request `json:"request"`
}

type request struct {
	UID    string `json:"uid"`
	Object struct {
		Metadata struct {
			Finalizers []string `json:"finalizers"`
		} `json:"metadata"`
	} `json:"object"`
	// The old object is decoded too (as raw JSON), so the floor reads the whole review
	// as any webhook judging an UPDATE must.
	OldObject json.RawMessage `json:"oldObject"`
}

type status struct {
	Message string `json:"message"`
}

type response struct {
	UID     string  `json:"uid"`
	Allowed bool    `json:"allowed"`
	Status  *status `json:"status,omitempty"`
}

type answer struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Response   response `json:"response"`
}

func validate(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var in review
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&in); err != nil || in.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	out := answer{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}
	out.Response = response{UID: in.Request.UID, Allowed: true}
	for _, finalizer := range in.Request.Object.Metadata.Finalizers {
		if finalizer == ProbeFinalizer {
			out.Response.Allowed = false
			out.Response.Status = &status{Message: DenyMessage}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		log.Printf("writing the answer: %v", err)
	}
}

func main() {
	bind := flag.String("bind", "127.0.0.1:8443", "address to serve TLS on")
	cert := flag.String("cert", "tls.crt", "PEM serving certificate")
	key := flag.String("key", "tls.key", "PEM private key")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("/validate", validate)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	server := &http.Server{
		Addr:    *bind,
		Handler: mux,
		// HTTP/1.1 only, as gunicorn speaks: the comparison is of servers, not protocols.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12},
		// Longer than the API server's 90 s idle timeout, like the webhook's keep-alive.
		IdleTimeout:       120 * time.Second,
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Fatal(server.ListenAndServeTLS(*cert, *key))
}
