-- Sample CRM data: 1000 fake customers, their orders, tickets and consent.
-- Deterministic (no random()): the same rows on every load. Run after crm_schema.sql.
SET client_min_messages = warning;
BEGIN;
TRUNCATE public.consent, public.support_tickets, public.orders, public.customers;

WITH names AS (
  SELECT ARRAY['Anna','Ben','Carla','David','Elena','Farid','Greta','Hugo','Ines','Jonas',
               'Karin','Luis','Marta','Nuno','Olga','Pedro','Quinn','Rosa','Sven','Tania',
               'Umar','Vera','Walter','Ximena','Yusuf','Zoe','Amir','Bianca','Chen','Dora'] AS first,
         ARRAY['Novak','Rossi','Kowalski','Jensen','Ferreira','Almeida','Santos','Horvat','Byrne','Nowak',
               'Silva','Duarte','Berg','Moreau','Dubois','Schmidt','Muller','Garcia','Lopez','Martin',
               'Bernard','Petit','Costa','Larsen','Nielsen','Kelly','Walsh','Romano','Bianchi','Weber'] AS last,
         ARRAY['example.com','mail.example.org','post.example.net','inbox.example.eu'] AS domains,
         ARRAY['Main','Oak','Maple','Cedar','Elm','Park','Lake','Hill','Mill','Church','River','Station'] AS streets,
         ARRAY['Street','Road','Avenue','Lane'] AS suffixes,
         -- city, zip prefix, country
         ARRAY['Lisbon','Porto','Berlin','Munich','Paris','Lyon','Milan','Dublin','Krakow','Aarhus'] AS cities,
         ARRAY['1100','4000','1011','8033','7500','6900','2012','0204','3000','8000'] AS zips,
         ARRAY['PT','PT','DE','DE','FR','FR','IT','IE','PL','DK'] AS countries,
         ARRAY['Prefers email contact.','Prefers phone calls in the evening.','VIP: handle with care.',
               'Asked not to be called on weekends.','Complained about a late delivery in the past.',
               'Speaks Portuguese and English.'] AS notes
)
INSERT INTO public.customers (id, full_name, email, phone, ssn, birth_date, street, city, zip, country,
                              notes, lifetime_value, created_at)
SELECT g,
       first[1 + (g * 7) % 30] || ' ' || last[1 + (g * 13 + g / 30) % 30],
       lower(first[1 + (g * 7) % 30]) || '.' || lower(last[1 + (g * 13 + g / 30) % 30]) || g
         || '@' || domains[1 + g % 4],
       '+1-' || lpad((200 + (g * 37) % 800)::text, 3, '0') || '-555-' || lpad(((g * 7919) % 10000)::text, 4, '0'),
       lpad((100 + (g * 389) % 799)::text, 3, '0') || '-' || lpad((1 + (g * 53) % 99)::text, 2, '0')
         || '-' || lpad((1 + (g * 7717) % 9999)::text, 4, '0'),
       date '1940-01-01' + (g * 3571) % 23000,
       (1 + (g * 37) % 998)::text || ' ' || streets[1 + (g * 5) % 12] || ' ' || suffixes[1 + g % 4],
       cities[1 + (g * 3) % 10],
       zips[1 + (g * 3) % 10] || ((g * 7) % 10)::text,
       countries[1 + (g * 3) % 10],
       CASE WHEN g % 4 = 0 THEN NULL ELSE notes[1 + (g * 11) % 6] || ' Customer ref CR-' || (10000 + g) END,
       ((g * 7919) % 2500000) / 100.0,
       timestamptz '2015-01-01 00:00:00+00' + ((g::bigint * 2654435761) % 283996800) * interval '1 second'
FROM generate_series(1, 1000) g, names;

INSERT INTO public.orders (id, customer_id, ordered_at, total, status)
SELECT o,
       1 + (o * 7) % 1000,
       timestamptz '2020-01-01 00:00:00+00' + ((o * 48271) % 157680000) * interval '1 second',
       ((o::bigint * 2654435761) % 50000) / 100.0 + 5,
       (ARRAY['new','paid','shipped','delivered','delivered','delivered','returned','cancelled'])[1 + (o * 3) % 8]
FROM generate_series(1, 3000) o;

INSERT INTO public.support_tickets (id, customer_id, opened_at, subject, body)
SELECT t,
       c.id,
       timestamptz '2022-01-01 00:00:00+00' + ((t * 69621) % 63072000) * interval '1 second',
       (ARRAY['Billing question','Delivery delay','Refund request','Password reset','Damaged item'])[1 + t % 5],
       'Customer ' || c.email || ' wrote: '
         || (ARRAY['my invoice shows a wrong amount.','my parcel is two weeks late.','my refund has not arrived.',
                   'I cannot log in since Monday.','my parcel arrived damaged.'])[1 + t % 5]
         || ' Please call back on ' || c.phone || '.'
FROM generate_series(1, 400) t
JOIN public.customers c ON c.id = 1 + (t * 17) % 1000;

-- Consent: ~70% opted in to marketing (some explicitly opted out), ~90% to support.
INSERT INTO public.consent (subject_id, purpose, granted, updated_at)
SELECT g, 'marketing', g % 10 < 7, timestamptz '2023-01-01 00:00:00+00' + (g * 3607) * interval '1 second'
FROM generate_series(1, 1000) g WHERE g % 10 <> 9
UNION ALL
SELECT g, 'support', true, timestamptz '2023-01-01 00:00:00+00' + (g * 3613) * interval '1 second'
FROM generate_series(1, 1000) g WHERE g % 10 <> 3;

COMMIT;
ANALYZE public.customers, public.orders, public.support_tickets, public.consent;
