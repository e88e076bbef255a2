package chart

import (
	"bytes"
	"image/color"
	"image/png"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCanvasDrawsWhereAsked(t *testing.T) {
	c := New(100, 40)
	blue := color.RGBA{0, 0, 255, 255}
	c.Fill(10, 10, 20, 20, blue)
	c.Text(30, 30, "a→b", color.Black)
	b, err := c.PNG()
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(b))
	require.NoError(t, err)
	require.Equal(t, 100, img.Bounds().Dx())
	r, g, bl, _ := img.At(15, 15).RGBA()
	require.Equal(t, [3]uint32{0, 0, 0xffff}, [3]uint32{r, g, bl}, "inside the filled rectangle")
	r, g, bl, _ = img.At(5, 5).RGBA()
	require.Equal(t, [3]uint32{0xffff, 0xffff, 0xffff}, [3]uint32{r, g, bl}, "the background is white")
	dark := 0
	for x := 30; x < 30+5*CharW; x++ {
		for y := 18; y < 32; y++ {
			if r, _, _, _ := img.At(x, y).RGBA(); r < 0x8000 {
				dark++
			}
		}
	}
	require.Positive(t, dark, "the text is drawn")
}
