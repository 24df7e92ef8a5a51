package model

import "testing"

func TestEndpointDeny(t *testing.T) {
	extra, err := ParseDenyRule("10.0.0.0/8:22")
	if err != nil {
		t.Fatal(err)
	}
	d := append(DefaultEndpointDeny(9901, 18000), extra)
	for url, denied := range map[string]bool{
		"http://127.0.0.1:9901/quitquitquit":       true,
		"http://127.9.9.9:9901/":                   true,
		"http://localhost:18000/":                  true,
		"http://api.localhost:9901/":               true,
		"http://[::1]:9901/":                       true,
		"http://[::ffff:127.0.0.1]:9901/":          true,
		"http://0.0.0.0:9901/":                     true,
		"http://169.254.169.254/latest/meta-data/": true,
		"https://169.254.169.254/":                 true,
		"http://[fd00:ec2::254]/":                  true,
		"http://[fe80::1]:8080/":                   true,
		"http://10.1.2.3:22/":                      true,
		"http://10.1.2.3:8080/":                    false,
		"http://127.0.0.1:8080/":                   false,
		"http://backend.example:9901/":             false,
		"https://192.168.1.10:9901/":               false,
	} {
		if err := d.Check(url); (err != nil) != denied {
			t.Errorf("Check(%s) = %v, want denied %v", url, err, denied)
		}
	}
	for s, want := range map[string]string{
		"169.254.0.0/16": "169.254.0.0/16", "127.0.0.1:9901": "127.0.0.1/32:9901",
		"[::1]:9901": "[::1/128]:9901", "[fe80::/10]:22": "[fe80::/10]:22", "10.1.2.3/8": "10.0.0.0/8", "::1": "::1/128",
	} {
		r, err := ParseDenyRule(s)
		if err != nil || r.String() != want {
			t.Errorf("ParseDenyRule(%s) = %v, %v; want %s", s, r, err, want)
		}
	}
	for _, s := range []string{"", "example.com", "127.0.0.1:0", "127.0.0.1:70000", "[::1", "[::1]x", "10.0.0.0/33"} {
		if r, err := ParseDenyRule(s); err == nil {
			t.Errorf("ParseDenyRule(%q) = %v, want an error", s, r)
		}
	}
}
