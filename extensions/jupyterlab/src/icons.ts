/**
 * Launcher card icons: one glyph per capability on Shopfloor's colour.
 */
import { LabIcon } from '@jupyterlab/ui-components';

function cardIcon(name: string, glyph: string): LabIcon {
  const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 52 52">
  <rect x="2" y="2" width="48" height="48" rx="8" fill="#2f6f8f"/>
  <g fill="none" stroke="#fff" stroke-width="3" stroke-linecap="round" stroke-linejoin="round">${glyph}</g>
</svg>`;
  return new LabIcon({ name: `shopfloor:${name}`, svgstr });
}

export const icons: { [card: string]: LabIcon } = {
  compute: cardIcon('compute', '<rect x="12" y="12" width="28" height="10" rx="2"/><rect x="12" y="30" width="28" height="10" rx="2"/><path d="M17 17h2M17 35h2"/>'),
  ray: cardIcon('ray', '<circle cx="26" cy="26" r="5"/><path d="M26 9v8M26 35v8M9 26h8M35 26h8M14 14l6 6M32 32l6 6M38 14l-6 6M20 32l-6 6"/>'),
  finetune: cardIcon('finetune', '<path d="M14 38V14M26 38V14M38 38V14"/><circle cx="14" cy="30" r="3"/><circle cx="26" cy="20" r="3"/><circle cx="38" cy="27" r="3"/>'),
  publish: cardIcon('publish', '<path d="M26 36V14M17 23l9-9 9 9M14 40h24"/>'),
  gallery: cardIcon('gallery', '<rect x="11" y="11" width="12" height="12" rx="2"/><rect x="29" y="11" width="12" height="12" rx="2"/><rect x="11" y="29" width="12" height="12" rx="2"/><rect x="29" y="29" width="12" height="12" rx="2"/>'),
  workshops: cardIcon('workshops', '<circle cx="26" cy="17" r="5"/><path d="M15 40c0-7 5-11 11-11s11 4 11 11"/>'),
  examples: cardIcon('examples', '<path d="M14 12h17l7 7v21H14z"/><path d="M31 12v7h7M19 27h14M19 33h10"/>'),
  help: cardIcon('help', '<circle cx="26" cy="26" r="14"/><path d="M21 22a5 5 0 1 1 7 4.5c-1.5.8-2 1.8-2 3.5"/><path d="M26 35v.5"/>')
};
