// Package chart is the little drawing the benchmark reports need: filled
// rectangles and text in x/image's fixed font on a white canvas, as PNG. A
// plotting library (gonum/plot) would bring a dozen modules for a few bars.
package chart

import (
	"bytes"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// CharW is the width of one character of the font, in pixels.
const CharW = 7

// Canvas is an image being drawn.
type Canvas struct{ img *image.RGBA }

// New returns a white canvas of w × h pixels.
func New(w, h int) *Canvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	return &Canvas{img: img}
}

// Text writes s with its baseline at y, starting at x. The font is ASCII
// only, so an arrow is written "->".
func (c *Canvas) Text(x, y int, s string, ink color.Color) {
	d := font.Drawer{Dst: c.img, Src: image.NewUniform(ink), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(strings.ReplaceAll(s, "→", "->"))
}

// Fill paints the rectangle from (x0, y0) to (x1, y1).
func (c *Canvas) Fill(x0, y0, x1, y1 int, paint color.Color) {
	draw.Draw(c.img, image.Rect(x0, y0, x1, y1), image.NewUniform(paint), image.Point{}, draw.Src)
}

// PNG encodes the canvas.
func (c *Canvas) PNG() ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, c.img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
