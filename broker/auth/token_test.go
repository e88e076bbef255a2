package auth

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestToken(t *testing.T) {
	tok, h, err := GenerateToken()
	require.NoError(t, err)
	require.Len(t, tok, 43, "256 bits in base64url")
	require.True(t, IsTokenHash(h), h)
	require.NoError(t, checkHash(h), "the users file takes it")
	require.NotContains(t, h, tok, "the hash does not hold the token")
	tok2, h2, err := GenerateToken()
	require.NoError(t, err)
	require.NotEqual(t, tok, tok2)
	require.NotEqual(t, h, h2)

	require.True(t, verify(h, []byte(tok)))
	for _, bad := range []string{"", tok2, tok[:42], tok + "x", strings.ToUpper(tok)} {
		require.False(t, verify(h, []byte(bad)), "%q", bad)
	}
	// The same token under another salt is another hash, and both verify.
	salt2 := h2[len(tokenScheme) : len(tokenScheme)+22]
	same := tokenScheme + salt2 + "$" + b64.EncodeToString(tokenMAC([]byte(mustDecode(t, salt2)), []byte(tok)))
	require.NotEqual(t, h, same)
	require.True(t, verify(same, []byte(tok)))

	// Malformed token hashes are refused by the users file.
	for _, bad := range []string{tokenScheme, tokenScheme + "x$y", h[:len(h)-1], h + "A", strings.Replace(h, "$", "!", 2)} {
		require.Error(t, checkHash(bad), "%q", bad)
	}
}

func mustDecode(t *testing.T, s string) []byte {
	b, err := b64.DecodeString(s)
	require.NoError(t, err)
	return b
}

// A users file may mix bcrypt passwords and tokens; each is checked its way.
func TestPolicyWithTokens(t *testing.T) {
	tok, h, err := GenerateToken()
	require.NoError(t, err)
	users := append(farmUsers(t), User{Name: "b3", Role: RoleBridge, Site: "farm1", Node: "node3", PasswordHash: h})
	p, err := NewPolicy("sensorfarm", users)
	require.NoError(t, err)
	require.NoError(t, p.Authenticate(Login{Username: "b3", Password: []byte(tok), ClientID: "bridge:farm1:node3"}))
	require.ErrorIs(t, p.Authenticate(Login{Username: "b3", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node3"}), ErrWrongPassword)
	require.NoError(t, p.Authenticate(Login{Username: "b1", Password: []byte("pw-b1"), ClientID: "bridge:farm1:node1"}))
	require.False(t, p.Costly("b3"))
	require.True(t, p.Costly("b1"))

	// Round trip through the file.
	got, err := ParseUsers(MarshalUsers(users))
	require.NoError(t, err)
	require.Equal(t, users, got)
}

// BenchmarkCheck measures one password check of each kind: the cost a
// CONNECT pays.
func BenchmarkCheck(b *testing.B) {
	tok, th, err := GenerateToken()
	require.NoError(b, err)
	bh, err := HashPassword([]byte("a person's password"), DefaultCost)
	require.NoError(b, err)
	b.Run("token", func(b *testing.B) {
		for b.Loop() {
			if !verify(th, []byte(tok)) {
				b.Fatal("no match")
			}
		}
	})
	b.Run("bcrypt-10", func(b *testing.B) {
		for b.Loop() {
			if !verify(bh, []byte("a person's password")) {
				b.Fatal("no match")
			}
		}
	})
}
