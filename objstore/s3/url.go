package s3

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/objfs/objfs/objstore"
)

// Defaults of the URL's query parameters.
const (
	awsEndpoint        = "s3.amazonaws.com"
	defaultMaxInflight = 32
	maxMaxInflight     = 1024
	defaultTimeout     = 60 * time.Second
)

// knownParams lists the query parameters of an s3:// URL, for errors.
const knownParams = "endpoint, region, tls, max-inflight, timeout"

// config is what an s3:// URL says.
type config struct {
	bucket      string
	prefix      string // "" or a valid key followed by "/"
	endpoint    string // host[:port]
	region      string // "" lets the client find the bucket's region
	tls         bool
	maxInflight int
	timeout     time.Duration // per request attempt
}

// parseURL reads s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R&tls=BOOL
// &max-inflight=N&timeout=DURATION. Credentials are never taken from the
// URL: user information is refused.
func parseURL(u *url.URL) (config, error) {
	c := config{endpoint: awsEndpoint, tls: true, maxInflight: defaultMaxInflight, timeout: defaultTimeout}
	bad := func(format string, args ...any) (config, error) {
		return config{}, fmt.Errorf("s3 store URL %q: %s", redact(u), fmt.Sprintf(format, args...))
	}
	switch {
	case u.Scheme != "s3":
		return bad("scheme must be s3")
	case u.Opaque != "":
		return bad("want s3://BUCKET[/PREFIX]")
	case u.User != nil:
		return bad("user information is not allowed: credentials are never taken from the URL (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use the shared credentials file or an IAM role)")
	case u.Fragment != "":
		return bad("fragments are not allowed")
	case u.Host == "":
		return bad("no bucket: want s3://BUCKET[/PREFIX]")
	}
	c.bucket = u.Host
	if err := s3utils.CheckValidBucketNameStrict(c.bucket); err != nil {
		hint := ""
		if strings.Contains(c.bucket, ":") {
			hint = " (the server goes in ?endpoint=HOST:PORT)"
		}
		return bad("invalid bucket name %q: %v%s", c.bucket, err, hint)
	}
	if p := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/"); p != "" {
		// The prefix obeys the key rules, so that prefix + key is a key
		// of the same safe alphabet and no prefix can reach into another
		// one (every prefix ends with "/").
		if !objstore.ValidKey(p) || len(p)+1+objstore.MaxKeyLen > 1024 {
			return bad("invalid prefix %q: use lower-case letters, digits and . _ - separated by single slashes", p)
		}
		c.prefix = p + "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("invalid query: %v", err)
	}
	for name, vals := range q {
		if len(vals) != 1 {
			return bad("query parameter %q is given %d times", name, len(vals))
		}
		v := vals[0]
		switch name {
		case "endpoint":
			if err := checkEndpoint(v); err != nil {
				return bad("%v", err)
			}
			c.endpoint = v
		case "region":
			if v == "" || strings.Trim(v, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				return bad("invalid region %q", v)
			}
			c.region = v
		case "tls":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("tls=%q: want true or false", v)
			}
			c.tls = b
		case "max-inflight":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxMaxInflight {
				return bad("max-inflight=%q: want a number of requests from 1 to %d", v, maxMaxInflight)
			}
			c.maxInflight = n
		case "timeout":
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return bad("timeout=%q: want a positive duration such as 30s", v)
			}
			c.timeout = d
		default:
			return bad("unknown query parameter %q (known: %s)", name, knownParams)
		}
	}
	return c, nil
}

// checkEndpoint accepts HOST or HOST:PORT, without scheme or path.
func checkEndpoint(v string) error {
	if strings.Contains(v, "://") {
		return fmt.Errorf("endpoint %q: give HOST:PORT without a scheme (tls=false for plain http)", v)
	}
	if v == "" || strings.ContainsAny(v, "/?#@ &=%\\") {
		return fmt.Errorf("endpoint %q: want HOST or HOST:PORT", v)
	}
	host := v
	if strings.Contains(v, ":") {
		h, port, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("endpoint %q: want HOST or HOST:PORT: %v", v, err)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("endpoint %q: invalid port %q", v, port)
		}
		host = h
	}
	if host == "" {
		return fmt.Errorf("endpoint %q: no host", v)
	}
	return nil
}

// String is the canonical URL of the configuration: the parameters that
// differ from their defaults, in a fixed order. It holds no secret, since
// the URL never does.
func (c config) String() string {
	u := url.URL{Scheme: "s3", Host: c.bucket}
	if c.prefix != "" {
		u.Path = "/" + strings.TrimSuffix(c.prefix, "/")
	}
	var q []string
	if c.endpoint != awsEndpoint {
		q = append(q, "endpoint="+c.endpoint) // checkEndpoint leaves nothing to escape
	}
	if c.region != "" {
		q = append(q, "region="+c.region)
	}
	if !c.tls {
		q = append(q, "tls=false")
	}
	if c.maxInflight != defaultMaxInflight {
		q = append(q, "max-inflight="+strconv.Itoa(c.maxInflight))
	}
	if c.timeout != defaultTimeout {
		q = append(q, "timeout="+c.timeout.String())
	}
	u.RawQuery = strings.Join(q, "&")
	return u.String()
}

// redact returns u without its user information, for messages.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
